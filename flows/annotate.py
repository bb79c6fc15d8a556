"""The annotation page for people labelling preference pairs: `make annotate`.

    python -m flows.annotate serve [--db URL] [--annotators FILE] [--host 127.0.0.1] [--port 8765]

--db: the annotation store (any SQLAlchemy URL), by default sqlite:///<run dir>/annotation.db,
the store the collection flow writes batches to. --annotators: the YAML file of ids and tokens
(copy configs/annotators.example.yaml). The page binds to 127.0.0.1: put a reverse proxy with
TLS in front of it to serve people on other machines. When a label completes a batch, the page
resumes the flow run waiting on it through the Prefect API (PREFECT_API_URL, e.g.
http://127.0.0.1:4200/api under `make serve`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tasks.runtime import PROJECT_ROOT, configure_environment

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_ANNOTATORS = PROJECT_ROOT / "configs" / "annotators.yaml"


def serve(db: str, annotators_file: Path, host: str, port: int) -> None:
    import uvicorn

    from tasks.annotation.people import load_annotators
    from tasks.annotation.store import AnnotationStore
    from tasks.annotation.web import RedactTokens, create_app

    annotators = load_annotators(annotators_file)
    if host != DEFAULT_HOST:
        print(
            f"warning: binding to {host}, not 127.0.0.1: tokens travel in clear text unless a "
            "TLS proxy is in front",
            file=sys.stderr,
        )
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    store = AnnotationStore(db)
    print(f"annotation page: http://{host}:{port}/  store: {db}  people: {len(annotators)}")
    try:
        uvicorn.run(create_app(store, annotators), host=host, port=port, log_level="info")
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.annotate", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the annotation page")
    s.add_argument("--db", default=None, help="SQLAlchemy URL (default: <run dir>/annotation.db)")
    s.add_argument("--annotators", type=Path, default=DEFAULT_ANNOTATORS, help="YAML: id, token")
    s.add_argument("--host", default=DEFAULT_HOST, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = p.parse_args(argv)
    run_dir = configure_environment()  # before anything imports prefect (the resume hook)
    from tasks.reward.people import default_store_url  # the collection flows' default too

    try:
        serve(args.db or default_store_url(run_dir), args.annotators, args.host, args.port)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
