"""``importd job ID [--json]``: a job's state, from Redis (live) or PostgreSQL (durable).

Redis is asked first (it has live counts while a job runs); when it has nothing (expired,
restarted, down) the answer comes from ``importd.jobs``. ``source`` says which.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg

from importd.config import Settings
from importd.imports import store
from importd.imports.progress import Progress

#: Fields printed in the human format, in order.
SHOWN = ("state", "table", "rows", "rejected", "percent", "bytes", "total_bytes", "attempt", "error",
         "started_at", "finished_at", "updated_at")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="ID", help="job id")
    parser.add_argument("--json", action="store_true", help="print JSON")


def status(settings: Settings, job_id: str) -> dict[str, Any] | None:
    """The job's status dict with ``source`` ("redis" or "postgresql"), or None if unknown."""
    progress = Progress(settings)
    try:
        live = progress.read(job_id)
    finally:
        progress.close()
    if live:
        return {"id": job_id, "source": "redis", **live}
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    if rec is None:
        return None
    out = rec.to_dict()
    out.update(source="postgresql", table=rec.target_table, rows=rec.rows_imported,
               rejected=rec.rows_rejected, attempt=rec.attempts)
    if rec.state == "SUCCESS":
        out["percent"] = 100
    elif rec.file_size and rec.checkpoint_offset:
        out["percent"] = round(100.0 * rec.checkpoint_offset / rec.file_size, 1)
    return out


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        found = status(settings, args.job_id)
    except psycopg.Error as exc:
        print(f"importd job: {exc}", file=sys.stderr)
        return 1
    if found is None:
        print(f"importd job: no job {args.job_id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found, default=str))
        return 0
    print(f"job {args.job_id} (from {found['source']})")
    for key in SHOWN:
        value = found.get(key)
        if value not in (None, ""):
            print(f"  {key}: {value}")
    return 0
