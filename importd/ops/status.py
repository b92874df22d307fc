"""``importd status``: what the broker and the job table say right now.

Per queue (work queues, their delay queues, the DLQ) the depth and the number of consumers,
read with a passive ``queue_declare`` (it changes nothing and needs no management plugin);
then the job counts by state from PostgreSQL when the store is installed and reachable. A
missing piece is reported, never fatal: status is what an operator runs when things are
broken.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from kombu import Connection

from importd.config import Settings
from importd.subcommand import Subcommand
from importd.worker import topology
from importd.worker.publisher import broker_connection

#: Exit codes: 0 all read; 1 the broker could not be read.
EXIT_OK, EXIT_BROKER_DOWN = 0, 1


@dataclass
class QueueStatus:
    name: str
    messages: int | None
    consumers: int | None
    error: str = ""


def queue_status(settings: Settings, names: list[str] | None = None) -> list[QueueStatus]:
    """Depth and consumers of every importd queue (a missing queue is reported as such)."""
    with broker_connection(settings, heartbeat=0) as conn:
        return queue_stats(conn, names)


def queue_stats(conn: Connection, names: list[str] | None = None) -> list[QueueStatus]:
    """The one reading of queue statistics (``importd status`` and ``/metrics``): a passive
    ``queue_declare`` per queue on ``conn``."""
    out = []
    channel = conn.channel()
    for name in names or topology.all_queue_names():
        try:
            ok = channel.queue_declare(name, passive=True)
            out.append(QueueStatus(name, int(ok.message_count), int(ok.consumer_count)))
        except conn.channel_errors as exc:  # 404: the queue does not exist; the channel is closed
            out.append(QueueStatus(name, None, None, f"missing ({getattr(exc, 'reply_text', exc)})"))
            channel = conn.channel()
    return out


def job_counts(settings: Settings) -> tuple[dict[str, int] | None, str]:
    """Jobs by state from PostgreSQL, or (None, why not)."""
    try:
        store = importlib.import_module("importd.imports.store")
    except ImportError:
        return None, "importd.imports.store is not installed"
    try:
        with store.connect(settings) as conn:
            return dict(store.counts_by_state(conn)), ""
    except Exception as exc:  # noqa: BLE001 - the database being down is a status, not a crash
        return None, f"database not readable: {exc}".splitlines()[0]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        queues = queue_status(settings)
    except Exception as exc:  # noqa: BLE001 - connection refused, auth, vhost missing
        print(f"importd status: broker not readable: {exc}", file=sys.stderr)
        return EXIT_BROKER_DOWN
    jobs, jobs_error = job_counts(settings)
    if args.json:
        doc: dict[str, Any] = {"queues": {q.name: {k: v for k, v in asdict(q).items() if k != "name"}
                                          for q in queues},
                               "jobs": jobs, "jobs_error": jobs_error or None}
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    width = max(len(q.name) for q in queues)
    print(f"{'QUEUE':<{width}}  {'MESSAGES':>8}  {'CONSUMERS':>9}")
    for q in queues:
        if q.error:
            print(f"{q.name:<{width}}  {'-':>8}  {'-':>9}  {q.error}")
        else:
            print(f"{q.name:<{width}}  {q.messages:>8}  {q.consumers:>9}")
    print()
    if jobs is None:
        print(f"jobs: unknown ({jobs_error})")
    else:
        print("jobs: " + (" ".join(f"{state}={count}" for state, count in sorted(jobs.items())) or "none"))
    return EXIT_OK


#: ``importd status``.
STATUS = Subcommand(_add_arguments, _run)
