"""``importd submit FILE --table T``: queue an import; ``--follow`` shows a live progress bar.

The bar is drawn on stderr from the job's Redis event stream; when Redis has nothing to say
(down, or the events are gone) it polls PostgreSQL instead. The exit code is 0 when the job
ended in SUCCESS (1 for FAILURE or CANCELLED, 2 for a refused submit).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

import psycopg

from importd.config import Settings
from importd.errors import ImportdError
from importd.imports import store
from importd.imports.progress import Progress
from importd.imports.submit import SubmitError, submit

#: Width of the progress bar in characters.
BAR_WIDTH = 30
#: Seconds between PostgreSQL polls when Redis has no events.
POLL_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="CSV file to import")
    parser.add_argument("--table", required=True, help="target table (must be on IMPORTD_TABLES)")
    parser.add_argument("--priority", type=int, choices=range(0, 11), metavar="0-10", help="message priority")
    parser.add_argument("--mode", choices=("atomic", "resumable"), default="atomic")
    parser.add_argument("--max-errors", type=int, default=0, help="rejected rows tolerated (default 0)")
    parser.add_argument("--validate-only", action="store_true", help="check the file, load nothing")
    parser.add_argument("--delimiter", help="field delimiter (default: sniffed from the header)")
    parser.add_argument("--encoding", help="file encoding (default utf-8)")
    parser.add_argument("--on-conflict", choices=("error", "skip", "update"), help="on a unique key conflict")
    parser.add_argument("--conflict-key", help="comma separated key columns for --on-conflict update")
    parser.add_argument("--map", action="append", default=[], metavar="HEADER=COLUMN",
                        help="map a header name to a column (repeatable)")
    parser.add_argument("--ignore", action="append", default=[], metavar="HEADER",
                        help="ignore the field of this header name: read and dropped (repeatable; "
                             "--ignore '' for an empty name, as a trailing delimiter makes)")
    parser.add_argument("--idempotency-key", help="a second submit with this key returns the first job")
    parser.add_argument("--follow", action="store_true", help="show progress until the job ends")
    parser.add_argument("--json", action="store_true", help="print the job as JSON")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("delimiter", "encoding", "on_conflict", "conflict_key"):
        if getattr(args, key):
            options[key] = getattr(args, key)
    columns: dict[str, str | None] = dict(item.split("=", 1) for item in args.map if "=" in item)
    columns.update(dict.fromkeys(args.ignore))  # null: the field is ignored
    if columns:
        options["columns"] = columns
    return options


def run(args: argparse.Namespace, settings: Settings) -> int:
    from importd.worker.publisher import Publisher

    publisher = Publisher(settings)
    try:
        rec = submit(settings, args.file, args.table, priority=args.priority, mode=args.mode,
                     max_errors=args.max_errors, validate_only=args.validate_only, options=_options(args),
                     idempotency_key=args.idempotency_key, publisher=publisher)
    except SubmitError as exc:
        for problem in exc.problems:
            print(f"importd submit: {problem}", file=sys.stderr)
        return 2
    except (ImportdError, psycopg.Error, OSError) as exc:
        print(f"importd submit: {exc}", file=sys.stderr)
        return 1
    finally:
        publisher.close()
    if args.json and not args.follow:
        print(json.dumps(rec.to_dict()))
    elif not args.follow:
        print(rec.id)
    if not args.follow:
        return 0
    print(f"job {rec.id} queued", file=sys.stderr)
    final = follow(settings, rec.id, sys.stderr)
    if args.json:
        print(json.dumps(final.to_dict()))
    else:
        print(f"{final.state}: {final.rows_imported} rows imported, {final.rows_rejected} rejected"
              + (f" ({final.error})" if final.error else ""))
    return 0 if final.state == "SUCCESS" else 1


def follow(settings: Settings, job_id: str, out: TextIO) -> store.JobRecord:
    """Draw the job's progress on ``out`` until it ends; return the final job record."""
    progress = Progress(settings)
    last_id, next_poll = "0", 0.0
    try:
        with store.connect(settings) as conn:
            while True:
                events = progress.events(job_id, after_id=last_id, block_ms=500)
                for event_id, event in events:
                    last_id = event_id
                    _draw(out, event)
                final_drawn = any(e.get("type") == "final" for _, e in events)
                if final_drawn or time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + POLL_S
                    rec = store.get_job(conn, job_id)
                    if rec is None:
                        raise SystemExit(f"importd: job {job_id} disappeared")
                    if not events and not progress.available():
                        _draw(out, _from_record(rec))
                    if rec.finished:
                        if not final_drawn:
                            _draw(out, {**_from_record(rec), "percent": "100" if rec.state == "SUCCESS" else ""})
                        out.write("\n")
                        out.flush()
                        return rec
                if not events and not progress.available():
                    time.sleep(POLL_S / 2)
    finally:
        progress.close()


def _from_record(rec: store.JobRecord) -> dict[str, Any]:
    percent = round(100.0 * rec.checkpoint_offset / rec.file_size, 1) if rec.file_size else ""
    return {"state": rec.state, "rows": rec.rows_imported or rec.checkpoint_rows,
            "rejected": rec.rows_rejected, "percent": percent}


def _draw(out: TextIO, event: dict[str, Any]) -> None:
    try:
        percent = float(event.get("percent") or 0.0)
    except ValueError:
        percent = 0.0
    filled = int(BAR_WIDTH * min(percent, 100.0) / 100)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    state = event.get("state", "")
    line = f"[{bar}] {percent:5.1f}%  {int(event.get('rows') or 0):,} rows"
    if int(event.get("rejected") or 0):
        line += f"  {int(event['rejected']):,} rejected"
    if state:
        line += f"  {state}"
    out.write(("\r" if out.isatty() else "") + line + ("" if out.isatty() else "\n"))
    out.flush()
