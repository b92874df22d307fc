"""An import job's arguments: validated once, the same way for the API, the CLI and the worker.

Message args: ``{"object": {"key", "size", "sha256"}, "table", "mode", "max_errors", "validate_only",
"options": {...}}``; ``file`` (a path) instead of ``object`` is still read (messages queued before).
The job row keeps ``mode`` in its column and the rest in ``options`` (jsonb):
``max_errors`` (int >= 0, default 0), ``validate_only`` (bool), ``delimiter`` (one ASCII
character; sniffed from the header when absent), ``encoding`` (default utf-8, see
:data:`importd.imports.copy.scan.ENCODINGS`), ``columns`` (explicit mapping header name ->
column, or null: the field is ignored),
``on_conflict`` (error | skip | update), ``conflict_key`` (columns of the unique key for
``update``), ``max_line_bytes`` / ``max_field_bytes`` / ``batch_bytes`` (override settings).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from importd.imports.copy import scan
from importd.imports.store import JobRecord
from importd.worker.messages import Job

MODES = ("atomic", "resumable")
#: Largest integer an option or argument may hold (PostgreSQL's bigint: a job row stores them).
MAX_INT = 2**63 - 1
#: Largest byte size an option may set (``max_line_bytes``, ``max_field_bytes``, ``batch_bytes``):
#: a read of that many bytes must be possible (10**20 raised OverflowError mid-run, a retry).
MAX_BYTES_OPTION = 1 << 30
#: Longest text of one argument or option value (a table, a key, a column name).
MAX_TEXT = 4096
#: An object's checksum in a message: a sha256 in hex.
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
ON_CONFLICT = ("error", "skip", "update")
#: Keys allowed in ``options``.
OPTION_KEYS = frozenset({"max_errors", "validate_only", "delimiter", "encoding", "columns", "on_conflict",
                         "conflict_key", "max_line_bytes", "max_field_bytes", "batch_bytes"})


class JobArgsError(ValueError):
    """Arguments or options that cannot describe an import."""


def _text(value: Any, name: str) -> str:
    """``value`` if it is text a job row can hold: a str without NUL (PostgreSQL's text and
    jsonb refuse it) or a lone surrogate (no UTF-8 encoder takes it), at most MAX_TEXT long.
    Such a value reached PostgreSQL and failed there: a 500 at the API, and in the worker a
    message acked with no job row (lost) or retried four times as if the database had failed."""
    if not isinstance(value, str):
        raise JobArgsError(f"{name} must be text")
    if len(value) > MAX_TEXT:
        raise JobArgsError(f"{name} is longer than {MAX_TEXT} characters")
    if "\x00" in value:
        raise JobArgsError(f"{name} cannot contain NUL")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise JobArgsError(f"{name} is not valid Unicode (a lone surrogate)") from None
    return value


def normalize(options: dict[str, Any] | None, *, max_errors: Any = None,
              validate_only: Any = None) -> dict[str, Any]:
    """Checked, JSON-ready options (what the job row stores); JobArgsError on any defect."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise JobArgsError("options must be an object")
    unknown = set(options) - OPTION_KEYS
    if unknown:
        raise JobArgsError(f"unknown options: {', '.join(sorted(unknown))}")
    out = dict(options)
    if max_errors is not None:
        out["max_errors"] = max_errors
    if validate_only is not None:
        out["validate_only"] = validate_only
    out["max_errors"] = _int(out.get("max_errors", 0), "max_errors")
    if not isinstance(out.get("validate_only", False), bool):
        raise JobArgsError("validate_only must be true or false")
    out["validate_only"] = bool(out.get("validate_only", False))
    delimiter = out.get("delimiter")
    if delimiter is not None:
        if delimiter == "\\t":
            delimiter = out["delimiter"] = "\t"
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n\x00' \
                or ord(delimiter) > 127:
            raise JobArgsError("delimiter must be one ASCII character other than a quote, newline or NUL")
    try:
        scan.encoding(out.get("encoding"))
    except ValueError as exc:
        raise JobArgsError(str(exc)[:300]) from exc
    columns = out.get("columns") or {}
    if not isinstance(columns, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                for k, v in columns.items()):
        raise JobArgsError("columns must map header names to column names (or null to ignore a field)")
    for header_name, column in columns.items():
        _text(header_name, "a header name in columns")
        if column is not None:
            _text(column, "a column name in columns")
    on_conflict = out.get("on_conflict", "error")
    if on_conflict not in ON_CONFLICT:
        raise JobArgsError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}")
    key = out.get("conflict_key") or []
    if isinstance(key, str):
        key = out["conflict_key"] = [k.strip() for k in key.split(",") if k.strip()]
    if not isinstance(key, list) or not all(isinstance(k, str) for k in key):
        raise JobArgsError("conflict_key must be a list of column names")
    for column in key:
        _text(column, "a column name in conflict_key")
    if on_conflict == "update" and not key:
        raise JobArgsError("on_conflict update needs conflict_key")
    for name in ("max_line_bytes", "max_field_bytes", "batch_bytes"):
        if name in out:
            out[name] = _int(out[name], name, low=1, high=MAX_BYTES_OPTION)
    return out


def _int(value: Any, name: str, low: int = 0, high: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise JobArgsError(f"{name} must be an integer")
    try:
        number = int(value)
    except ValueError as exc:
        raise JobArgsError(f"{name} must be an integer") from exc
    if not low <= number <= high:
        raise JobArgsError(f"{name} must be between {low} and {high}")
    return number


def job_from_args(job: Job) -> JobRecord:
    """A job row for a message that arrived without one (published by hand)."""
    args = job.args
    table, mode = args.get("table"), args.get("mode", "atomic")
    file, size, checksum = _object_of(args)
    if not isinstance(table, str) or not table:
        raise JobArgsError("args.table must be a table name")
    _text(table, "args.table")
    if mode not in MODES:
        raise JobArgsError(f"args.mode must be one of {', '.join(MODES)}")
    options = normalize(args.get("options"), max_errors=args.get("max_errors"),
                        validate_only=args.get("validate_only"))
    return JobRecord(id=job.job_id, task=job.task, target_table=table, file_path=file, file_size=size,
                     checksum=checksum, mode=mode, options=options, priority=max(0, min(10, job.priority)))


def _object_of(args: dict[str, Any]) -> tuple[str, int | None, str | None]:
    """Key, size and checksum of the job's file: ``args.object`` (``{"key", "size", "sha256"}``,
    what submit publishes) or ``args.file`` (a path inside the upload directory, as messages
    queued before the object store carried; its size read here)."""
    obj = args.get("object")
    if obj is not None:
        if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or not obj["key"]:
            raise JobArgsError("args.object must name a key")
        _text(obj["key"], "args.object.key")
        size, digest = obj.get("size"), obj.get("sha256")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_INT):
            raise JobArgsError("args.object.size must be a byte count")
        if isinstance(digest, str) and digest and not SHA256_HEX.fullmatch(digest):
            raise JobArgsError("args.object.sha256 must be 64 hex digits")
        return obj["key"], size, f"sha256:{digest}" if isinstance(digest, str) and digest else None
    file = args.get("file")
    if not isinstance(file, str) or not file:
        raise JobArgsError("args.file must be a path")
    _text(file, "args.file")
    try:
        return file, Path(file).stat().st_size, None
    except OSError:
        return file, None, None
