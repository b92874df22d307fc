"""``importd`` command line: ``main(argv) -> int`` with named exit codes.

Each subcommand is one small function here or a ``run(args, settings)`` in the module that
owns the job (the importer owns ``submit``, the DLQ module owns ``replay-dlq``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from importd import logs
from importd.config import Settings, split_list
from importd.errors import TopologyMismatch
from importd.subcommand import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, Command
from importd.worker import topology

#: Subcommands implemented in other modules: name -> ("module" or "module:ATTR", help). The
#: module (or its attribute ATTR, when one module serves several commands) has
#: ``add_arguments(parser)`` and ``run(args, settings) -> int``.
EXTERNAL: dict[str, tuple[str, str]] = {
    "migrate": ("importd.imports.commands.migrate", "create or upgrade importd's tables in PostgreSQL"),
    "submit": ("importd.imports.commands.enqueue", "queue a CSV import (--follow shows its progress)"),
    "job": ("importd.imports.commands.job", "show a job's state (Redis, else PostgreSQL)"),
    "errors": ("importd.imports.commands.rejects", "print a job's rejected rows as CSV"),
    "replay-dlq": ("importd.ops.dlq:REPLAY", "move dead letters from failed_tasks back to their queue"),
    "dlq": ("importd.ops.dlq:DLQ", "list or purge what failed_tasks holds"),
    "ping": ("importd.ops.control:PING", "ask every live worker to answer"),
    "inspect": ("importd.ops.control:INSPECT", "show what the workers run now"),
    "status": ("importd.ops.status:STATUS", "queue depths, consumers and job counts"),
    "events": ("importd.ops.events:EVENTS", "tail job events (received, started, ..., dead-lettered)"),
    "api": ("api.cli", "serve the HTTP API and the upload page (uvicorn)"),
}


def cmd_declare(args: argparse.Namespace, settings: Settings) -> int:
    from importd.worker.publisher import broker_connection

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
    from importd.worker import sdnotify
    from importd.worker.supervisor import Supervisor

    queues = split_list(args.queues or settings.queues)
    for name in queues:
        try:
            topology.queue_spec(name)
        except KeyError as exc:
            print(f"importd worker: {exc.args[0]}", file=sys.stderr)
            return EXIT_USAGE
    metrics_port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    if metrics_port:
        from importd.ops import metrics

        metrics.serve_worker(settings, metrics_port)  # before the children fork
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
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port "
                   "(default IMPORTD_METRICS_PORT; 0: off)")
    p.set_defaults(func=cmd_worker)

    for name, (target, _help) in EXTERNAL.items():
        module, _, attr = target.partition(":")
        mod = importlib.import_module(module)
        command = getattr(mod, attr) if attr else mod
        p = sub.add_parser(name, help=_help)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
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
