"""The static import graph of the project's own packages, and the code key a task caches on.

A task's result depends on the code it runs. Rather than a hand-written list of modules (which
drifts from the imports), the key is derived: the source of the task's module and of every
project module it imports, transitively (imports inside functions count too), plus the data
files those modules ship (a file under a package's `data/` folder counts for a module whose
source names it, e.g. `DATA_DIR / "borderline.yaml"`).

Data contracts are keyed by use, not by package: `data_contracts/__init__.py` imports every
contract (it is the registry), so following it would re-key every task whenever a contract is
added. The walk does not follow the package `data_contracts` itself; it follows contract modules
imported by name, `data_contracts.base` (the machinery every contract shares), and the contract
of every dataset name that a module in the closure spells as a string constant (`"sft_dialogues"`),
which is how tasks name what they read and write.

Pure code: it parses files (never imports them), so it can key a temporary copy of the tree.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tasks", "models", "data_contracts", "flows")
CONTRACTS = "data_contracts"
CONTRACT_BASE = "data_contracts.base"
DATA_SUFFIXES = (".yaml", ".yml", ".json", ".txt", ".csv")


@dataclass(frozen=True)
class ModuleInfo:
    path: Path
    imports: frozenset[str]  # project modules this module imports (resolved, before filtering)
    strings: frozenset[str]  # string constants it spells (to find contract and data-file names)


@lru_cache(maxsize=4096)
def _parse(path: Path, mtime_ns: int, size: int) -> tuple[ast.Module, frozenset[str]]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    strings = frozenset(
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) < 80
    )
    return tree, strings


@dataclass
class CodeGraph:
    """The import graph of the project tree under `root` (the real checkout by default)."""

    root: Path = PROJECT_ROOT
    _infos: dict[str, ModuleInfo | None] = field(default_factory=dict)
    _closures: dict[str, frozenset[str]] = field(default_factory=dict)

    def module_path(self, name: str) -> Path | None:
        """The file of project module `name` (a package's `__init__.py`), or None if none."""
        if name.split(".")[0] not in PACKAGES:
            return None
        base = self.root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def info(self, name: str) -> ModuleInfo | None:
        if name not in self._infos:
            path = self.module_path(name)
            self._infos[name] = None if path is None else self._read(name, path)
        return self._infos[name]

    def _read(self, name: str, path: Path) -> ModuleInfo:
        stat = path.stat()
        tree, strings = _parse(path, stat.st_mtime_ns, stat.st_size)
        is_package = path.name == "__init__.py"
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = self._absolute(name, is_package, node)
                found.add(module)
                # `from pkg import mod` imports the module pkg.mod when there is one
                found.update(f"{module}.{alias.name}" for alias in node.names)
        resolved = set()
        for module in found:
            if self.module_path(module) is None:
                continue
            resolved.add(module)
            # importing a.b.c runs a/__init__ and a/b/__init__ first
            parts = module.split(".")
            resolved.update(".".join(parts[:i]) for i in range(1, len(parts)))
        return ModuleInfo(path, frozenset(m for m in resolved if self.module_path(m)), strings)

    @staticmethod
    def _absolute(name: str, is_package: bool, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = name.split(".") if is_package else name.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        return ".".join([*base, node.module] if node.module else base)

    def closure(self, name: str) -> set[str]:
        """`name` and every project module it reaches, with data contracts keyed by use."""
        if name not in self._closures:
            self._closures[name] = frozenset(self._closure(name))
        return set(self._closures[name])

    def _closure(self, name: str) -> set[str]:
        seen = self._reachable([name])
        seen |= self._reachable(self._contracts_named(seen))  # with a contract's own imports
        if any(m.startswith(CONTRACTS + ".") for m in seen):
            seen.add(CONTRACT_BASE)
        return seen

    def _reachable(self, start) -> set[str]:
        """The project modules reachable from `start` by imports, not through the registry."""
        seen, stack = set(), list(start)
        while stack:
            module = stack.pop()
            if module in seen or module == CONTRACTS or self.info(module) is None:
                continue
            seen.add(module)
            stack.extend(self.info(module).imports)
        return seen

    def _contracts_named(self, modules: set[str]) -> set[str]:
        """The contract modules whose dataset name one of `modules` spells as a string."""
        return {
            f"{CONTRACTS}.{text}"
            for module in modules
            for text in self.info(module).strings
            if text.isidentifier() and self.module_path(f"{CONTRACTS}.{text}")
        }

    def data_files(self, name: str) -> list[Path]:
        """Data files under the module's package `data/` folder that its source names."""
        info = self.info(name)
        data_dir = info.path.parent / "data"
        if not data_dir.is_dir():
            return []
        return sorted(
            p for p in data_dir.rglob("*") if p.suffix in DATA_SUFFIXES and p.name in info.strings
        )

    def files(self, name: str) -> list[Path]:
        """Every file the code key of module `name` covers, in a stable order."""
        paths = set()
        for module in self.closure(name):
            paths.add(self.info(module).path)
            paths.update(self.data_files(module))
        return sorted(paths)

    def code_key(self, name: str) -> str:
        """sha256 over the covered files' paths (relative to the root) and contents."""
        digest = hashlib.sha256()
        for path in self.files(name):
            digest.update(path.relative_to(self.root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        return digest.hexdigest()
