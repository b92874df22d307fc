"""Every rejected record of a job, as the original CSV lines, and its errors grouped.

The job table keeps the first :data:`importd.imports.store.MAX_STORED_REJECTS` rejects as
(line, column, value, reason) rows. A user who wants to fix and reload them needs *all* of
them, in the file's own form. So the run writes, next to the stored upload, a file
``<upload>.rejects.csv``: the upload's header bytes, then the raw bytes of each rejected
record (same delimiter, quoting, encoding and line ends), appended when its batch settles.
The loader already reports each reject's first physical line; the batch holds the bytes, so
finding a rejected record costs one record scan of a batch that had rejects (none on the
clean path) and memory holds one batch's rejected lines at most.

A resumable job commits the file's length with each checkpoint (``importd.job_rejects``,
same transaction as the rows), so a resumed run cuts the file back to what its committed
batches wrote and goes on from there; any other run starts the file afresh.

The errors are also counted per (column, reason), the value taken out of the reason
(``invalid input syntax for type numeric: "1,204"`` counts as ``invalid input syntax for
type numeric``), with the first few line numbers of each: the dry run's grouped report.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from importd.imports.copy import scan
from importd.imports.copy.spec import Reject

if TYPE_CHECKING:  # the API reads summaries here and must not load the batch reader
    from importd.imports.copy.batches import Batch

#: Example line numbers kept per group.
EXAMPLES = 3
#: Distinct (column, reason) groups kept; later ones are counted under :data:`OTHER`.
MAX_GROUPS = 50
OTHER = "other reasons"
SUFFIX = ".rejects.csv"

_VALUE = re.compile(r':\s*"(?:[^"]|"")*"\s*$|\s*\(\d+ bytes\)$|\s+at byte offset \d+$')


def path_for(upload: Path | str) -> Path:
    return Path(f"{upload}{SUFFIX}")


def reason_kind(reason: str) -> str:
    """A reason without the value it quotes (so that all bad numbers make one group)."""
    return _VALUE.sub("", reason.strip()) or reason


class RejectLog:
    """The reject file and grouped counts of one run of one job (see the module docstring)."""

    def __init__(self, job_id: str, path: Path, eol: bytes) -> None:
        self.job_id, self.path, self.eol = job_id, path, eol
        self.file = path.open("r+b" if path.exists() else "w+b")
        self.records = 0
        self.saved: int | None = None  # records at the last save (None: never saved)
        self.groups: dict[tuple[str, str], list[Any]] = {}  # (column, reason) -> [count, [lines]]

    @classmethod
    def open(cls, conn: psycopg.Connection[Any], job_id: str, upload: Path, header: bytes,
             resume: bool, eol: bytes = b"\n") -> RejectLog:
        """The log of a run: continued from the last checkpoint when ``resume``, else new;
        ``eol`` is the file's line end (LF, CRLF or a bare CR), decided at its header."""
        log = cls(job_id, path_for(upload), eol)
        row = conn.execute("SELECT file_bytes, records, groups FROM importd.job_rejects WHERE job_id = %s",
                           (job_id,)).fetchone() if resume else None
        if row and row[0] >= len(header):
            log.file.truncate(row[0])
            log.records = int(row[1])
            log.groups = {(g["column"], g["reason"]): [g["count"], list(g["lines"])] for g in row[2]}
        else:
            log.file.truncate(0)
            log.file.write(header if header.endswith(eol) else header + eol)
        log.file.seek(0, os.SEEK_END)
        return log

    def add(self, batch: Batch, rejects: list[Reject], raws: dict[int, bytes] | None = None) -> None:
        """Append the raw records of ``rejects`` (from ``batch``) and count them; ``raws``
        (line -> record) spares the walk over the batch's records when it has every line."""
        if not rejects:
            return
        for line, column, _value, reason in rejects:
            self._count(column or "", reason_kind(reason), line)
        wanted = {r[0] for r in rejects}
        brk = scan.line_break(self.eol)
        out: list[bytes] = []
        if raws is not None and wanted.issubset(raws):
            out = [raw if raw.endswith(brk) else raw + self.eol for raw in (raws[n] for n in sorted(wanted))]
            self.file.write(b"".join(out))
            self.records += len(out)
            return
        data, line, start = batch.data, batch.line, 0
        for end in scan.record_ends(data, brk=brk):
            if line in wanted:
                raw = data[start:end]
                out.append(raw if raw.endswith(brk) else raw + self.eol)
                if len(out) == len(wanted):
                    break
            line += data.count(brk, start, end)
            start = end
        self.file.write(b"".join(out))
        self.records += len(out)

    def _count(self, column: str, reason: str, line: int) -> None:
        key = (column, reason)
        if key not in self.groups and len(self.groups) >= MAX_GROUPS:
            key = ("", OTHER)
        group = self.groups.setdefault(key, [0, []])
        group[0] += 1
        if len(group[1]) < EXAMPLES:
            group[1].append(line)

    def grouped(self) -> list[dict[str, Any]]:
        """The groups, largest first."""
        return [{"column": column or None, "reason": reason, "count": count, "lines": lines}
                for (column, reason), (count, lines) in sorted(self.groups.items(), key=lambda kv: -kv[1][0])]

    def save(self, conn: psycopg.Connection[Any], force: bool = False) -> None:
        """Make the file durable and record its length and the groups in ``conn``'s transaction
        (a checkpoint's or, with ``force``, the final one); a checkpoint that added no reject
        costs nothing."""
        if not force and self.saved == self.records:
            return
        self.saved = self.records
        self.file.flush()
        if self.records:  # a file of the header alone holds nothing to keep (a small clean job: ~2 ms)
            os.fsync(self.file.fileno())
        size = self.file.tell()
        groups = [{**g, "column": g["column"] or ""} for g in self.grouped()]
        conn.execute(
            "INSERT INTO importd.job_rejects (job_id, file_path, file_bytes, records, groups)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (job_id) DO UPDATE SET file_path = excluded.file_path,"
            " file_bytes = excluded.file_bytes, records = excluded.records, groups = excluded.groups,"
            " updated_at = now()", (self.job_id, str(self.path), size, self.records, Jsonb(groups)))

    def close(self, keep_empty: bool = True) -> None:
        """Close the file; without ``keep_empty`` a file that holds no reject goes too (a worker
        reading from object storage leaves nothing behind on its own disk for a clean job)."""
        self.file.close()
        if not keep_empty and self.records == 0:
            self.path.unlink(missing_ok=True)


def summary(conn: psycopg.Connection[Any], job_id: str) -> dict[str, Any] | None:
    """(for the API) The job's reject file and groups, or None if the job wrote none."""
    row = conn.execute("SELECT file_path, file_bytes, records, groups FROM importd.job_rejects WHERE job_id = %s",
                       (job_id,)).fetchone()
    if row is None:
        return None
    groups = [{**g, "column": g["column"] or None} for g in row[3]]
    return {"file_path": row[0], "file_bytes": int(row[1]), "records": int(row[2]), "groups": groups}
