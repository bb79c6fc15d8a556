"""Cache policy for expensive deterministic tasks.

Prefect's TASK_SOURCE hashes only the task function's own lines, so a change in the pure
code it calls (a filter rule, a loss) would not invalidate the cache. `SourceFiles` adds the
source text of the modules the task depends on; with INPUTS (content-addressed manifests and
configs) the key changes exactly when the data, the config or the code changes.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from tasks.persist import VerifiedRecords


CODE_AND_DATA = (".py", ".yaml")


@dataclass
class SourceFiles(CachePolicy):
    modules: tuple[str, ...] = field(default_factory=tuple)

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters, **kwargs) -> str:
        h = hashlib.sha256()
        for name in self.modules:
            module = importlib.import_module(name)
            # a package counts with every .py file inside it, and the data files it ships
            files = (
                sorted(p for p in Path(module.__path__[0]).rglob("*") if p.suffix in CODE_AND_DATA)
                if hasattr(module, "__path__")
                else [Path(inspect.getfile(module))]
            )
            for path in files:
                h.update(path.name.encode())
                h.update(path.read_bytes())
        return h.hexdigest()


def code_and_inputs(*modules: str) -> CachePolicy:
    """Cache on the task's inputs, its source and the source of `modules`.

    A cached record is checked before Prefect loads it (see tasks.persist).
    """
    policy = INPUTS + TASK_SOURCE + SourceFiles(modules=tuple(modules) + ("tasks.io", "data_contracts"))
    return VerifiedRecords(policies=policy.policies)
