"""``importd`` command line: ``main(argv) -> int`` with named exit codes.

Each subcommand is one small function here or a ``run(args, settings)`` in the module that
owns the job (the importer owns ``submit``, the DLQ module owns ``replay-dlq``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from importd import logs, topology
from importd.config import Settings
from importd.errors import TopologyMismatch

#: Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78

Command = Callable[[argparse.Namespace, Settings], int]

#: Subcommands implemented in other modules: name -> ("module", "add_arguments", "run").
EXTERNAL: dict[str, tuple[str, str]] = {
    "migrate": ("importd.commands.migrate", "create or upgrade importd's tables in PostgreSQL"),
    "submit": ("importd.commands.submit", "queue a CSV import (--follow shows its progress)"),
    "job": ("importd.commands.job", "show a job's state (Redis, else PostgreSQL)"),
    "errors": ("importd.commands.errors", "print a job's rejected rows as CSV"),
    "api": ("api.cli", "serve the HTTP API and the upload page (uvicorn)"),
}


def cmd_declare(args: argparse.Namespace, settings: Settings) -> int:
    from importd.publisher import broker_connection

    try:
        with broker_connection(settings) as conn:
            names = topology.declare(conn)
    except TopologyMismatch as exc:
        print(f"importd declare: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for name in names:
        print(name)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from importd import sdnotify
    from importd.supervisor import Supervisor

    queues = [q.strip() for q in (args.queues or settings.queues).split(",") if q.strip()]
    for name in queues:
        try:
            topology.queue_spec(name)
        except KeyError as exc:
            print(f"importd worker: {exc.args[0]}", file=sys.stderr)
            return EXIT_USAGE
    supervisor = Supervisor(
        settings,
        queues,
        concurrency=args.concurrency or settings.concurrency,
        max_tasks_per_child=settings.max_tasks_per_child if args.max_tasks_per_child is None
        else args.max_tasks_per_child,
        notify=sdnotify.notify,
    )
    return supervisor.run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="importd", description="Reliable CSV to PostgreSQL imports.")
    parser.add_argument("--loglevel", default=None, help="log level (default IMPORTD_LOG_LEVEL or info)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("declare", help="declare exchanges, queues and bindings on the broker")
    p.set_defaults(func=cmd_declare)

    p = sub.add_parser("worker", help="run the worker daemon (prefork supervisor)")
    p.add_argument("-Q", "--queues", help="comma separated queues (default IMPORTD_QUEUES)")
    p.add_argument("-c", "--concurrency", type=int, help="child processes (default IMPORTD_CONCURRENCY)")
    p.add_argument("--max-tasks-per-child", type=int, help="replace a child after N jobs")
    p.add_argument("-l", "--loglevel", dest="loglevel", help="log level")
    p.set_defaults(func=cmd_worker)

    for name, (module, _help) in EXTERNAL.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=_help)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(log_level=args.loglevel)
    except ValueError as exc:
        print(f"importd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.log_level)
    func: Command = args.func
    try:
        return func(args, settings)
    except KeyboardInterrupt:
        return 130
