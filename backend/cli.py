"""Command line: `python -m backend serve | worker | models | rollback` (experiments: `python -m lab`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

from .config import Settings


def control_socket(port: int) -> str:
    """This instance's gunicorn control socket. gunicorn 27 puts every instance's at one path
    (`$XDG_RUNTIME_DIR/gunicorn.ctl`, else `~/.gunicorn/gunicorn.ctl`): two backends on one host
    would take it from each other, and the first to exit would delete it. One port, one instance."""
    return os.path.join(tempfile.gettempdir(), f"lsb-gunicorn-{port}.ctl")


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """gunicorn with the app factory. In embedded mode every web worker also runs the worker threads
    (`jobs.worker.start_embedded_worker`), and on the private redis-server there are as many web
    workers as in production (WORKERS), since they all reach it; in memory (fakeredis) only one.

    In embedded mode the private redis-server of MODEL_DIR starts here, before gunicorn forks, so
    this process owns it: a restarted gunicorn worker finds it running, and it stops when this
    process exits (or dies: `backend/state/connection.py`).
    """
    from gunicorn.app.base import BaseApplication

    from .state.connection import EmbeddedStoreError, start_embedded

    workers = args.workers or settings.workers
    store = None
    if settings.embedded:
        settings.configure_logging()
        try:
            store = start_embedded(settings)
        except EmbeddedStoreError as exc:
            print(f"embedded store: {exc}", file=sys.stderr)
            return 2
        if store is None:  # fakeredis lives in one process
            workers = 1
    port = args.port or settings.port
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"lsb-metrics-{port}"))
    from . import metrics  # prometheus_client reads PROMETHEUS_MULTIPROC_DIR when first imported
    from .web.app import create_app

    metrics.prepare_multiprocess_dir(os.environ["PROMETHEUS_MULTIPROC_DIR"])

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": f"{args.host or settings.host}:{port}",
                "workers": workers,
                "threads": settings.threads,
                "timeout": 120,
                "graceful_timeout": 30,
                "limit_request_line": 8190,
                "limit_request_field_size": 16380,
                "accesslog": None,
                "loglevel": settings.log_level.lower(),
                "child_exit": lambda server, worker: metrics.mark_process_dead(worker.pid),
            }
            if "control_socket" in self.cfg.settings:  # gunicorn 25.1 and later (23 has none)
                options["control_socket"] = control_socket(port)
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self) -> Any:
            return create_app(settings)

    try:
        Server().run()
    finally:
        if store is not None:
            store.stop()  # only in this process: a gunicorn worker leaving through here does nothing
    return 0


def worker(settings: Settings, args: argparse.Namespace) -> int:
    from .jobs.worker import run_worker

    if settings.embedded:
        print("REDIS_URL is not set: in embedded mode `serve` runs the worker itself", file=sys.stderr)
        return 2
    run_worker(settings, burst=args.burst, ranker=args.ranker)
    return 0


def models(settings: Settings, args: argparse.Namespace) -> int:
    from .state.registry import Registry

    registry = Registry(settings.model_dir)
    pointer = registry.pointer(args.project)
    for record in registry.history(args.project):
        marker = "*" if pointer and record.get("version") == pointer.version else " "
        metric = record.get("evaluation", {}).get("challenger", {})
        figures = ", ".join(f"{c}: f1 {m.get('macro_f1', 0):.3f} acc {m.get('accuracy', 0):.3f}" for c, m in metric.items())
        print(f"{marker} {str(record.get('version')):<14} {str(record.get('decision')):<10} examples={record.get('examples')} {figures}")
        print(f"    parent={record.get('parent')} trigger={record.get('trigger')!r} reason={record.get('reason')!r}")
    if pointer is None:
        print(f"project {args.project} has no current model")
    return 0


def rollback(settings: Settings, args: argparse.Namespace) -> int:
    from .state.registry import Registry, RegistryError

    try:
        pointer = Registry(settings.model_dir).rollback(args.project, args.to)
    except RegistryError as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(pointer.to_json()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the HTTP server (gunicorn)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.set_defaults(func=serve)
    p = sub.add_parser("worker", help="run an RQ worker for the retrain queue (needs REDIS_URL)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--ranker", action="store_true", help="work the rank queue only (every worker starts one)")
    p.set_defaults(func=worker)
    p = sub.add_parser("models", help="list a project's model history")
    p.add_argument("--project", type=int, required=True)
    p.set_defaults(func=models)
    p = sub.add_parser("rollback", help="move a project's current model back to an earlier version")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--to", required=True)
    p.set_defaults(func=rollback)
    args = parser.parse_args(argv)
    from .policy import file_rules

    settings = Settings.from_env()
    try:
        file_rules(settings.labeling_rules_file)
    except ValueError as exc:
        parser.exit(2, f"{exc}\n")
    return int(args.func(settings, args))
