"""Every rejected record of a job, as the original CSV lines, and its errors grouped.

The job table keeps the first :data:`importd.imports.store.MAX_STORED_REJECTS` rejects as
(line, column, value, reason) rows. A user who wants to fix and reload them needs *all* of
them, in the file's own form. So a job that rejected records gets a *reject file* in the upload
store, beside the uploads (``rejects/<job id>/<run>.csv``, whatever the store: a directory or
S3): the upload's header bytes, then the raw bytes of each rejected record (same delimiter,
quoting, encoding and line ends), in file order. The loader already reports each reject's
first physical line; the batch holds the bytes, so finding a rejected record costs one record
scan of a batch that had rejects (none on the clean path).

Where the records wait until the job ends (issue 14):

- those of a resumable job's *committed* batches go to ``importd.reject_chunks`` in the
  transaction that moves the checkpoint, so they are exactly what the checkpoint covers. A
  resumed run, on any host, starts from them: it never reads the committed part of the upload
  again. A run that lost its lock commits none (its checkpoint is fenced, its batch rolled back).
- every other one (an atomic job's, a batch counted but not committed) goes to this run's own
  spool, an unlinked temporary file (``TMPDIR``): nothing stays on the worker's disk, whatever
  becomes of the run.

The run that ends the job *publishes*: header + chunks + spool are streamed into the store
under a key of its own (S3: a multipart upload of 8 MiB parts; memory holds one part and one
chunk), and the key, length, record count and groups go to ``importd.job_rejects`` in the
transaction of the job's final state. No run ever appends to or truncates a file another run
wrote: each writes its own object, published whole (a rename, a completed multipart upload).
Once the final state is durable, the run removes the job's other reject files (a superseded
run's); a run whose final write was refused removes its own. A job without rejected records
publishes no file (its ``job_rejects`` row says 0 records and names none).

The errors are also counted per (column, reason), the value taken out of the reason
(``invalid input syntax for type numeric: "1,204"`` counts as ``invalid input syntax for
type numeric``), with the first few line numbers of each: the dry run's grouped report.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

import psycopg
from psycopg.types.json import Jsonb

from importd.imports import storage, store
from importd.imports.copy import scan
from importd.imports.copy.spec import Reject

if TYPE_CHECKING:  # the API reads summaries here and must not load the batch reader
    from importd.imports.copy.batches import Batch

#: Example line numbers kept per group.
EXAMPLES = 3
#: Distinct (column, reason) groups kept; later ones are counted under :data:`OTHER`.
MAX_GROUPS = 50
OTHER = "other reasons"
#: Bytes per read of the spool when it is published.
SPOOL_READ_BYTES = 1024 * 1024

#: Longest reason kept in a group (the JSON of a job stays bounded whatever the messages).
MAX_REASON_CHARS = 200

#: Where PostgreSQL's messages (and importd's own) put the value at fault, so that the value
#: can be taken out; PostgreSQL quotes a value without escaping the quotes inside it, so a
#: value runs to the last quote of its place. Names (column, constraint, encoding, type) stay.
_TRAILING = re.compile(r':\s*".*"\s*$|\s*\(\d+ bytes\)$|\s+at byte offset \d+$', re.DOTALL)
_INNER = (
    (re.compile(r'^value ".*" is out of range for type ', re.DOTALL), 'value is out of range for type '),
    (re.compile(r'^".*" (is out of range for type |is not a valid )', re.DOTALL), r'value \1'),
    (re.compile(r'^time zone ".*" not recognized$', re.DOTALL), "time zone not recognized"),
    (re.compile(r'^invalid value ".*" for ', re.DOTALL), "invalid value for "),
)
_BYTES = re.compile(r"0x[0-9a-fA-F]{2}(?: 0x[0-9a-fA-F]{2})*")


def reason_kind(reason: str) -> str:
    """A reason without the value it names, so that all bad numbers of a column make one group
    (``value "3271041745" is out of range for type integer`` and any other such value are
    ``value is out of range for type integer``; ``invalid byte sequence for encoding "UTF8":
    0xe9 0x61`` is ``invalid byte sequence for encoding "UTF8"``), at most
    :data:`MAX_REASON_CHARS` characters."""
    text = reason.strip()
    for pattern, kind in _INNER:
        text = pattern.sub(kind, text, count=1)
    text = _TRAILING.sub("", text)
    text = re.sub(r":\s*" + _BYTES.pattern + r"$", "", text)
    text = _BYTES.sub("0x..", text)
    text = text or reason
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 3] + "..."


class RejectLog:
    """The rejected records and grouped counts of one run of one job (see the module docstring)."""

    def __init__(self, job_id: str, store: storage.Store, header: bytes, eol: bytes, run: str) -> None:
        self.job_id, self.store, self.eol = job_id, store, eol
        self.header = header if header.endswith(eol) else header + eol
        self.key = f"{storage.rejects_folder(job_id)}{run}.csv"  # this run's file, once published
        self.pending: list[bytes] = []  # the records of the batch being settled
        self.committed = 0  # records in importd.reject_chunks (committed batches)
        self.spool: IO[bytes] | None = None  # this run's other records, made at the first one
        self.records = 0  # all of them
        self.groups: dict[tuple[str, str], list[Any]] = {}  # (column, reason) -> [count, [lines]]
        self.published: str | None = None  # the key this run wrote, until its final state commits

    @classmethod
    def open(cls, conn: psycopg.Connection[Any], job_id: str, store: storage.Store, header: bytes,
             resume_from: int | None, run: str, eol: bytes = b"\n") -> RejectLog:
        """The log of a run named ``run`` (unique per run); ``eol`` is the file's line end
        (LF, CRLF or a bare CR), decided at its header. A run that resumes from checkpoint
        ``resume_from`` goes on from the records and groups committed with it; any other starts
        with none (a job has chunks only once its checkpoint moved, and then its runs resume)."""
        log = cls(job_id, store, header, eol, run)
        if resume_from is None:
            return log
        log._carry_over_legacy(conn, resume_from)
        row = conn.execute(
            "SELECT coalesce(sum(records), 0), (SELECT groups FROM importd.reject_chunks WHERE job_id = %(job)s"
            " ORDER BY end_offset DESC LIMIT 1) FROM importd.reject_chunks WHERE job_id = %(job)s",
            {"job": job_id}).fetchone()
        if row is not None:
            log.records = log.committed = int(row[0])
            log.groups = {(g["column"], g["reason"]): [g["count"], list(g["lines"])] for g in row[1] or []}
        return log

    def _carry_over_legacy(self, conn: psycopg.Connection[Any], resume_from: int) -> None:
        """A job checkpointed by an importd before issue 14 kept its committed rejected records
        in a local ``<upload>.rejects.csv`` (``job_rejects.file_path``, absolute, its committed
        length in ``file_bytes``): they become the job's first chunk, if this host has the file."""
        row = conn.execute(
            "SELECT r.file_path, r.file_bytes, r.records, r.groups FROM importd.job_rejects r"
            " WHERE r.job_id = %s AND NOT EXISTS (SELECT 1 FROM importd.reject_chunks c WHERE c.job_id = r.job_id)",
            (self.job_id,)).fetchone()
        if row is None or not os.path.isabs(row[0]) or not int(row[2]):
            return
        try:
            with Path(row[0]).open("rb") as f:
                data = f.read(int(row[1]))
        except OSError:
            return
        if not data.startswith(self.header):
            return
        conn.execute("INSERT INTO importd.reject_chunks (job_id, end_offset, records, groups, data)"
                     " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                     (self.job_id, resume_from, int(row[2]), Jsonb(row[3]), data[len(self.header):]))

    def add(self, batch: Batch, rejects: list[Reject], raws: dict[int, bytes] | None = None) -> None:
        """Take the raw records of ``rejects`` (from ``batch``) and count them; ``raws``
        (line -> record) spares the walk over the batch's records when it has every line.
        They wait in memory (one batch's at most) for :meth:`checkpoint` or :meth:`spill`."""
        if not rejects:
            return
        for line, column, _value, reason in rejects:
            self._count(column or "", reason_kind(reason), line)
        wanted = {r[0] for r in rejects}
        brk = scan.line_break(self.eol)
        out: list[bytes] = []
        if raws is not None and wanted.issubset(raws):
            out = [raw if raw.endswith(brk) else raw + self.eol for raw in (raws[n] for n in sorted(wanted))]
        else:
            data, line, start = batch.data, batch.line, 0
            for end in scan.record_ends(data, brk=brk):
                if line in wanted:
                    raw = data[start:end]
                    out.append(raw if raw.endswith(brk) else raw + self.eol)
                    if len(out) == len(wanted):
                        break
                line += data.count(brk, start, end)
                start = end
        self.pending.extend(out)
        self.records += len(out)

    def checkpoint(self, conn: psycopg.Connection[Any], end: int) -> None:
        """The batch ending at ``end`` commits in ``conn``'s transaction, with the checkpoint:
        its records go with it (nothing is written for a batch without any)."""
        if not self.pending:
            return
        conn.execute("INSERT INTO importd.reject_chunks (job_id, end_offset, records, groups, data)"
                     " VALUES (%s, %s, %s, %s, %s)",
                     (self.job_id, end, len(self.pending), Jsonb(self._stored_groups()), b"".join(self.pending)))
        self.committed += len(self.pending)
        self.pending = []

    def spill(self) -> None:
        """The batch does not commit: its records go to this run's spool."""
        if not self.pending:
            return
        if self.spool is None:
            self.spool = tempfile.TemporaryFile(prefix="importd-rejects-")
        self.spool.write(b"".join(self.pending))
        self.pending = []

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

    def _stored_groups(self) -> list[dict[str, Any]]:
        return [{**g, "column": g["column"] or ""} for g in self.grouped()]

    def publish(self, conn: psycopg.Connection[Any], final: bool) -> store.RejectsRow:
        """Write the job's reject file (when it has records) to the store under this run's key;
        the row that records it, to write in ``conn``'s transaction with the job's final state
        (:func:`importd.imports.store.finish_job`, one statement). ``final``: the job cannot
        resume any more (SUCCESS, CANCELLED), so its chunks go too; after a FAILURE they stay
        for a replay, which resumes from the checkpoint. Call :meth:`committed_final` or
        :meth:`discard` once the transaction has ended."""
        self.spill()
        key, size = "", 0
        if self.records:
            key, size = self.key, self.store.write(self.key, cast(BinaryIO, _Joined(self._pieces(conn)))).size
            self.published = key
        if final and self.committed:
            conn.execute("DELETE FROM importd.reject_chunks WHERE job_id = %s", (self.job_id,))
        return store.RejectsRow(key, size, self.records, self._stored_groups())

    def _pieces(self, conn: psycopg.Connection[Any]) -> Iterator[bytes]:
        """The reject file: header, committed chunks in file order (one in memory at a time:
        a server-side cursor), then the spool."""
        yield self.header
        if self.committed:
            query = "SELECT data FROM importd.reject_chunks WHERE job_id = %s ORDER BY end_offset"
            if conn.autocommit:  # not a path of a run (it publishes in its final transaction)
                yield from (bytes(r[0]) for r in conn.execute(query, (self.job_id,)))
            else:
                with conn.cursor(name="importd_reject_chunks") as cur:
                    cur.itersize = 1
                    cur.execute(query, (self.job_id,))
                    yield from (bytes(r[0]) for r in cur)
        if self.spool is not None:
            self.spool.seek(0)
            while piece := self.spool.read(SPOOL_READ_BYTES):
                yield piece

    def committed_final(self, log: Any, previous: str | None) -> None:
        """The final state is durable: remove the job's other reject files (a superseded run's,
        a file of a run whose final write failed, a local file of an importd before issue 14;
        ``previous``: the file the job's row named before this run's). Best effort: a store
        that fails is logged, the files stay for a lifecycle rule."""
        try:
            if previous and os.path.isabs(previous):
                Path(previous).unlink(missing_ok=True)
            if self.published or previous:
                storage.clear_rejects(self.store, self.job_id, keep=self.published or "")
        except Exception as exc:  # noqa: BLE001 - the outcome is recorded; cleanup can wait
            log.warning("could not remove superseded reject files", job_id=self.job_id, error=str(exc))
        self.published = None

    def discard(self, log: Any) -> None:
        """The final state did not commit: the file this run published is nobody's."""
        if self.published is None:
            return
        try:
            self.store.delete(self.published)
        except Exception as exc:  # noqa: BLE001 - as in committed_final
            log.warning("could not remove an unrecorded reject file", key=self.published, error=str(exc))
        self.published = None

    def close(self) -> None:
        """Drop the spool (an unlinked file: its space goes with it)."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class _Joined(io.RawIOBase):
    """A stream of the pieces an iterator gives, for :meth:`importd.imports.storage.Store.write`
    (which reads it in parts; a read may return less than asked, never nothing before the end)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        super().__init__()
        self.pieces = pieces
        self.rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not len(self.rest):
            piece = next(self.pieces, None)
            if piece is None:
                return 0
            self.rest = memoryview(piece)
        n = min(len(b), len(self.rest))
        b[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n


def summary(conn: psycopg.Connection[Any], job_id: str) -> dict[str, Any] | None:
    """(for the API) The job's reject file and groups, or None if the job wrote none."""
    row = conn.execute("SELECT file_path, file_bytes, records, groups FROM importd.job_rejects WHERE job_id = %s",
                       (job_id,)).fetchone()
    if row is None:
        return None
    groups = [{**g, "column": g["column"] or None} for g in row[3]]
    return {"file_path": row[0], "file_bytes": int(row[1]), "records": int(row[2]), "groups": groups}
