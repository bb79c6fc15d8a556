"""What each rank of a launched step runs (tasks/distributed/launch.py):

    python -m tasks.distributed.worker <spec.json>

The spec names the work ("module:function"), its keyword arguments and the folder for the
result (rank 0) and error files (any rank)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from tasks.distributed.launch import RESULT_FILE


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    out = Path(spec["out"])
    rank = int(os.environ.get("RANK", "0"))
    try:
        from tasks.runtime import configure_environment

        configure_environment()
        module, name = spec["fn"].split(":")
        fn = getattr(importlib.import_module(module), name)
        result = fn(**spec["kwargs"])
        if rank == 0:
            tmp = out / f".{RESULT_FILE}.tmp"
            tmp.write_text(json.dumps({"result": result}, default=str))
            tmp.replace(out / RESULT_FILE)
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the launcher, then re-raised
        (out / f"error-rank{rank}.json").write_text(
            json.dumps(
                {
                    "rank": rank,
                    "time": time.time(),
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            )
        )
        raise
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
