"""The COPY engine: raw file bytes to ``COPY ... FROM STDIN`` in record-aligned batches.

A clean batch goes unchanged to COPY in a savepoint, so PostgreSQL does all per-field work and
its CSV rules hold on every path. A refused batch is loaded again around its bad records
(screen, triage, salvage); ``on_conflict`` skip/update go through a staging table. How and
why: docs/importing.md, "Speed".
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from importd.imports.copy import salvage, scan, screen, triage
from importd.imports.copy.batches import Batch
from importd.imports.copy.salvage import CONTEXT_LINE, Failure
from importd.imports.copy.spec import IGNORED, LoadOptions, Reject, Target

#: Records per salvage sub-batch (about the best trade-off between re-sent bytes and
#: statements when ~1% of rows are bad).
SALVAGE_RECORDS = 100
#: Longest value kept in a rejected-row report (characters).
MAX_REPORTED_VALUE = 1000
#: Savepoint names.
BATCH_SP, SUB_SP = sql.Identifier("importd_batch"), sql.Identifier("importd_sub")
STAGE = sql.Identifier("importd_stage")


def ignored_names(target: Target, columns: list[str]) -> list[str]:
    """The COPY column of each field: ``columns``, with ``importd_ignored_N`` (N the field's
    position, 1-based) for an ignored one: a ``text`` column of the staging table that no
    column of the table is named like."""
    taken = set(target.columns) | set(columns)
    out = []
    for position, column in enumerate(columns, 1):
        if column == IGNORED:
            column = f"importd_ignored_{position}"
            while column in taken:
                column += "_"
            taken.add(column)
        out.append(column)
    return out

def is_data_error(exc: BaseException) -> bool:
    return salvage.is_data_state(getattr(exc, "sqlstate", None))


@dataclass
class BatchResult:
    rows: int = 0
    rejects: list[Reject] = field(default_factory=list)
    #: The raw record of rejected lines, where the salvage knew its bytes: the reject file
    #: then needs no walk over every record of the batch (a Python loop per row).
    raws: dict[int, bytes] = field(default_factory=dict)


class Loader:
    """Loads batches of one file into one table on ``conn`` (inside the caller's transaction)."""

    def __init__(self, conn: psycopg.Connection[Any], target: Target, columns: list[str],
                 opts: LoadOptions) -> None:
        """``columns``: the table column of each field of the file, in file order; ``""`` (see
        :data:`IGNORED`) for a field the job ignores."""
        self.conn = conn
        self.target = target
        self.columns = columns
        self.opts = opts
        #: The COPY column of each field: its table column, or a text column of the staging
        #: table for an ignored field (the file's bytes go to COPY unchanged all the same).
        self.fields = ignored_names(target, columns)
        self.ignores = self.fields != columns
        self.salvage_next = False
        self.fresh = False
        self.chunk = salvage.START_CHUNK
        self.suspect_chunk = 1  # suspects are mostly bad: one per attempt until some pass
        self.screening = True
        self.suspects_loaded = 0  # rows of the last screened batch loaded from its suspects
        self.screen: tuple[screen.Rows | None] | None = None  # compiled on first use
        self.triage_columns: list[triage.Column] | None = None
        self.memo = triage.Memo()  # what PostgreSQL said of values and ragged records, kept for the load
        mapped = [c for c in columns if c != IGNORED]
        cols = sql.SQL(", ").join(map(sql.Identifier, mapped))
        options = sql.SQL("FORMAT csv, DELIMITER {}, ENCODING {}").format(
            sql.Literal(opts.delimiter), sql.Literal(opts.encoding.pg))
        staged = opts.on_conflict != "error" or self.ignores
        into = STAGE if staged else target.ident()
        self.copy_sql = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
            into, sql.SQL(", ").join(map(sql.Identifier, self.fields)), options)
        self.insert_sql: sql.Composed | None = None
        self.raw: salvage.RawCopy | None = None
        if staged:
            conflict: sql.Composable = sql.SQL("ON CONFLICT DO NOTHING")
            if opts.on_conflict == "error":  # staged only to drop the ignored fields
                conflict = sql.SQL("")
            elif opts.on_conflict == "update":
                key = sql.SQL(", ").join(map(sql.Identifier, opts.conflict_key))
                sets = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in mapped
                        if c not in opts.conflict_key]
                conflict = (sql.SQL("ON CONFLICT ({}) DO UPDATE SET {}").format(key, sql.SQL(", ").join(sets))
                            if sets else sql.SQL("ON CONFLICT ({}) DO NOTHING").format(key))
            self.insert_sql = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} {}").format(
                target.ident(), cols, cols, STAGE, conflict)

    def prepare(self) -> None:
        """Create the staging table (on_conflict skip/update, ignored fields); commits, so call
        it first. A staging table left by an earlier load on this connection is replaced."""
        if self.insert_sql is None:
            return
        cols = sql.SQL(", ").join(map(sql.Identifier, [c for c in self.columns if c != IGNORED]))
        statements = [sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(STAGE),  # never a table of the schema
                      sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(
                          STAGE, cols, self.target.ident())]
        statements += [sql.SQL("ALTER TABLE pg_temp.{} ADD COLUMN {} text").format(STAGE, sql.Identifier(name))
                       for name, column in zip(self.fields, self.columns, strict=True) if column == IGNORED]
        self.conn.execute(sql.SQL("; ").join(statements))  # one round trip (no parameters)
        self.conn.commit()

    # -- one batch ---------------------------------------------------------------------

    def load(self, batch: Batch, fresh: bool = False) -> BatchResult:
        """Load ``batch`` in a savepoint; bad records are salvaged around and reported.

        ``fresh``: the transaction holds nothing yet, so rolling it back is as good as a
        savepoint and two round trips are saved (small files are mostly round trips).
        """
        if batch.faults:
            return self._load_around(batch, fresh)
        self.fresh = fresh
        self._savepoint("SAVEPOINT")
        if not self.salvage_next and not batch.suspicious:
            try:
                rows = self._copy(batch.data)
                self._savepoint("RELEASE SAVEPOINT")
                return BatchResult(rows=rows)
            except psycopg.Error as exc:
                if not is_data_error(exc):
                    raise
                self._savepoint("ROLLBACK TO SAVEPOINT")
        result = None
        if not batch.suspicious:
            result = self._salvage_fast(batch) if self.insert_sql is None else self._staged_fast(batch)
        if result is None:
            result = self._salvage(batch)
        self._savepoint("RELEASE SAVEPOINT")
        self.salvage_next = bool(result.rejects)
        return result

    def _load_around(self, batch: Batch, fresh: bool) -> BatchResult:
        """Load the records between the batch's line-end faults, each run as a batch of its
        own, and reject the faulty records with PostgreSQL's message: psql would fail the
        whole file there (the style is the file's, decided at its header), so with
        max_errors they are rejected rows, never loaded ones."""
        result = BatchResult()
        pos = 0
        for start, stop, reason in (*batch.faults, (len(batch.data), len(batch.data), "")):
            if start > pos:
                part = self.load(batch.part(pos, start), fresh=fresh)
                fresh = False
                result.rows += part.rows
                result.rejects.extend(part.rejects)
            if stop > start:
                rec = _Record(raw=batch.data[start:stop], line=batch.line + batch.data.count(batch.brk, 0, start),
                              offset=batch.offset + start)
                result.rejects.append(self._describe(rec, Failure("22P04", reason, "", None)))
            pos = stop
        return result

    def _savepoint(self, verb: str) -> None:
        """The batch savepoint statement ``verb``; in a fresh transaction, rollback or nothing."""
        if self.fresh:
            if verb.startswith("ROLLBACK"):
                self.conn.rollback()
            return
        self.conn.execute(sql.SQL(verb + " {}").format(BATCH_SP))  # type: ignore[arg-type]

    def _copy(self, data: bytes) -> int:
        with self.conn.cursor() as cur:
            if self.insert_sql is not None:
                cur.execute(sql.SQL("TRUNCATE {}").format(STAGE))
            with cur.copy(self.copy_sql) as copy:
                copy.write(data)
            if self.insert_sql is None:
                return cur.rowcount
            cur.execute(self.insert_sql)
            return cur.rowcount

    # -- salvage -----------------------------------------------------------------------

    def _staged_fast(self, batch: Batch) -> BatchResult | None:
        """``on_conflict`` skip/update: the batch's good rows into the staging table by the
        fast salvage (screen, triage, byte ranges: PostgreSQL's type errors all show up in
        that COPY), then one ``INSERT ... ON CONFLICT`` for them all. None, with the batch
        rolled back, when that INSERT refuses (what the staging table does not check: NOT
        NULL, CHECK, a key twice in one batch for update) or when the order of the rows
        decides the outcome (``skip`` keeps a key's first row, and the screen loads the
        good suspects after the other rows): the record path then decides, as before."""
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("TRUNCATE {}").format(STAGE))
            self.suspects_loaded = 0
            staged = self._salvage_fast(batch)
            if staged is None:
                return None
            if self.opts.on_conflict == "skip" and self.suspects_loaded:
                self._savepoint("ROLLBACK TO SAVEPOINT")
                return None
            try:
                cur.execute(self.insert_sql)  # type: ignore[arg-type]
            except psycopg.Error as exc:
                if not is_data_error(exc):
                    raise
                self._savepoint("ROLLBACK TO SAVEPOINT")
                return None
            staged.rows = cur.rowcount
        return staged

    def _salvage_fast(self, batch: Batch) -> BatchResult | None:
        """Byte-range salvage (:mod:`importd.imports.copy.salvage`), of the screen's suspects only when the
        batch can be screened (:mod:`importd.imports.copy.screen`); None if it cannot tell the bad records."""
        if self.raw is None:
            self.raw = salvage.RawCopy(self.conn, self.copy_sql.as_bytes(self.conn))
        try:
            screened = self._screened(batch, self.raw)
            if screened is not None:
                return screened
            got, self.chunk = salvage.salvage(self.raw, batch.data, self.chunk, eol=self.opts.eol)
        except psycopg.Error as exc:
            if not is_data_error(exc):
                raise
            self._savepoint("ROLLBACK TO SAVEPOINT")
            return None
        return self._rejected(batch, got.rows, got.bad)

    def _screened(self, batch: Batch, raw: salvage.RawCopy) -> BatchResult | None:
        """The screened rows in one COPY, then the suspects through the salvage; None (and no
        more screening) if PostgreSQL refused a screened row or the batch cannot be screened."""
        rows = self._screen(batch.data)
        if rows is None:
            return None
        suspects: list[tuple[int, int]] = []
        loaded, failure = raw.attempt(screen.split(rows, batch.data, suspects, self.opts.brk))
        if failure is not None:
            if not salvage.is_data_state(failure.sqlstate):
                raise failure.error()
            self.screening = False  # a constraint the types do not show: salvage as before
            return None
        if not suspects:
            raw.close()
            return BatchResult(rows=loaded)
        if sum(e - s for s, e in suspects) > len(batch.data) * screen.MAX_SUSPECT_SHARE:
            self.screening = False  # a format the screen does not know (say 01/31/2024): not worth it
        judged = self._triage(batch.data, suspects)
        bad = judged.bad
        self.suspects_loaded = 0
        teachers = judged.teachers(self.memo)
        if teachers:  # one failed COPY per new kind of ragged record, then the others are known
            taught, bad_teachers = self._salvage_suspects(batch, raw, teachers, judged.teaches)
            self.suspects_loaded += taught
            bad += bad_teachers
            taken = set(teachers)
            again = self._triage(batch.data, [r for r in judged.rest if r not in taken])
            bad += again.bad
            judged = again
        if judged.rest:
            got, bad_rest = self._salvage_suspects(batch, raw, judged.rest, judged.teaches)
            self.suspects_loaded += got
            bad += bad_rest
        else:
            raw.close()
        return self._rejected(batch, loaded + self.suspects_loaded, bad)

    def _salvage_suspects(self, batch: Batch, raw: salvage.RawCopy, suspects: list[tuple[int, int]],
                          teaches: dict[int, int]) -> tuple[int, list[tuple[int, int, Failure]]]:
        """The good records of ``suspects`` loaded by the salvage (one per attempt while most
        fail): (rows loaded, the bad ones as (start, end, failure) in the batch). A ragged
        record's failure is kept for its kind (``teaches``: start -> field-count key)."""
        starts = list(itertools.accumulate((e - s for s, e in suspects), initial=0))
        got, self.suspect_chunk = salvage.salvage(raw, b"".join(batch.data[s:e] for s, e in suspects),
                                                  self.suspect_chunk, min_chunk=1, eol=self.opts.eol)
        bad = []
        for start, stop, why in got.bad:  # offsets in the suspects' bytes -> in the batch
            index = bisect.bisect_right(starts, start) - 1
            moved = suspects[index][0] - starts[index]
            bad.append((start + moved, stop + moved, why))
            if start + moved in teaches:
                self.memo.learn(teaches[start + moved], why)
        return got.rows, bad

    def _triage(self, data: bytes, suspects: list[tuple[int, int]]) -> triage.Judged:
        """The suspects a cast or an earlier answer shows bad (:mod:`importd.imports.copy.triage`), and the others."""
        if self.triage_columns is None:
            self.triage_columns = triage.columns(self.fields, self._types(), self.opts.delimiter.encode()) or []
        if not self.triage_columns:
            return triage.Judged([], suspects)
        return triage.triage(self.conn, self.triage_columns, data, suspects, self.opts.delimiter.encode(), self.memo)

    def _types(self) -> list[tuple[str, bool]]:
        """(type, not null) of each field, in file order (what the screen and the triage read): an
        ignored field is nullable text, whatever the table holds."""
        return [("text", False) if c == IGNORED else (self.target.columns[c].type, self.target.columns[c].not_null)
                for c in self.columns]

    def _screen(self, data: bytes) -> screen.Rows | None:
        """The screen for the file's line end (None: screening is off)."""
        if not self.screening or not self.opts.encoding.is_utf8:
            return None
        try:
            data.isascii() or data.decode("utf-8")  # C speed; a bad byte needs PostgreSQL's own error and offset
        except UnicodeDecodeError:
            return None
        if self.screen is None:
            self.screen = (screen.compile_rows(self._types(), self.opts.delimiter, self.opts.eol),)
        return self.screen[0]

    def _rejected(self, batch: Batch, rows: int, bad: list[tuple[int, int, Failure]]) -> BatchResult:
        """The result of a salvaged batch: ``bad`` (start, end, failure) become rejected rows."""
        result = BatchResult(rows=rows)
        line, counted = batch.line, 0
        for start, stop, failure in sorted(bad, key=lambda b: b[0]):
            line += batch.data.count(batch.brk, counted, start)
            counted = start
            rec = _Record(raw=batch.data[start:stop], line=line, offset=batch.offset + start)
            result.rejects.append(self._describe(rec, failure))
            result.raws[line] = rec.raw
        return result

    def _salvage(self, batch: Batch) -> BatchResult:
        data = batch.data
        result = BatchResult()
        records: list[_Record] = []
        start, line = 0, batch.line
        for end in scan.record_ends(data, brk=batch.brk):
            raw = data[start:end]
            rec = _Record(raw=raw, line=line, offset=batch.offset + start)
            problem = self._precheck(rec)
            if problem:
                result.rejects.append(problem)
            else:
                records.append(rec)
            line += raw.count(batch.brk)
            start = end
        for i in range(0, len(records), SALVAGE_RECORDS):
            self._load_records(records[i:i + SALVAGE_RECORDS], result)
        result.rejects.sort(key=lambda r: r[0])
        return result

    def _precheck(self, rec: _Record) -> Reject | None:
        """Reject what COPY would accept wrongly or too late (limits); quote an end marker."""
        body = scan.strip_eol(rec.raw)
        if len(body) > self.opts.max_line_bytes:
            return (rec.line, None, self._text(body[:MAX_REPORTED_VALUE]),
                    f"line longer than {self.opts.max_line_bytes} bytes ({len(body)} bytes)")
        if len(body) > self.opts.max_field_bytes:
            for index, value in enumerate(self._fields(body)):
                size = len(value.encode(self.opts.encoding.python, errors="replace"))
                if size > self.opts.max_field_bytes:
                    return (rec.line, self._column(index), value[:MAX_REPORTED_VALUE],
                            f"field longer than {self.opts.max_field_bytes} bytes ({size} bytes)")
        if body == b"\\.":
            rec.raw = b'"\\."' + rec.raw[len(body):]
        return None

    def _load_records(self, pending: list[_Record], result: BatchResult) -> None:
        while pending:
            payload = b"".join(r.raw for r in pending)
            self.conn.execute(sql.SQL("SAVEPOINT {}").format(SUB_SP))
            try:
                result.rows += self._copy(payload)
                self.conn.execute(sql.SQL("RELEASE SAVEPOINT {}").format(SUB_SP))
                return
            except psycopg.Error as exc:
                if not is_data_error(exc):
                    raise
                self.conn.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(SUB_SP))
                failure = Failure.from_exception(exc)
                bad = self._culprit(pending, failure, self.opts.eol)
                if bad is None:
                    if len(pending) == 1:
                        result.rejects.append(self._describe(pending[0], failure))
                        return
                    for rec in pending:  # no line to go by: one record at a time
                        self._load_records([rec], result)
                    return
                result.rejects.append(self._describe(pending[bad], failure))
                pending = pending[:bad] + pending[bad + 1:]

    @staticmethod
    def _culprit(pending: list[_Record], failure: Failure, eol: bytes) -> int | None:
        """Index of the record the error's ``line N`` designates (see :func:`salvage.locate`)."""
        match = CONTEXT_LINE.search(failure.context)
        if not match:
            return None
        payload = b"".join(r.raw for r in pending)
        found = salvage.locate(payload, [(0, len(payload))], int(match.group(1)), eol)
        if found is None:
            return None
        offset = 0
        for index, rec in enumerate(pending):
            if offset == found[0]:
                return index
            offset += len(rec.raw)
        return None

    def _describe(self, rec: _Record, failure: Failure) -> Reject:
        """(line, column, value, reason) of a record PostgreSQL refused."""
        reason = failure.message_primary
        match = CONTEXT_LINE.search(failure.context)
        column = (match.group(2) if match and match.group(2) else None) or failure.column_name
        body = scan.strip_eol(rec.raw)
        if failure.sqlstate in ("22021", "22P05"):  # invalid byte sequence / untranslatable character
            position = self._bad_byte(body)
            if position is not None:
                reason += f" at byte offset {rec.offset + position}"
            return rec.line, None, self._text(body), reason
        if column is None or column not in self.fields:
            return rec.line, column, self._text(body), reason
        if failure.sqlstate == "23502":
            return rec.line, column, None, reason
        fields = self._fields(body)
        index = self.fields.index(column)
        return rec.line, column, fields[index][:MAX_REPORTED_VALUE] if index < len(fields) else None, reason

    def _bad_byte(self, body: bytes) -> int | None:
        nul = body.find(b"\x00")
        try:
            body.decode(self.opts.encoding.python)
        except UnicodeDecodeError as exc:
            return exc.start if nul < 0 else min(nul, exc.start)
        return nul if nul >= 0 else None

    def _fields(self, body: bytes) -> list[str]:
        text = body.decode(self.opts.encoding.python, errors="replace").replace("\x00", "\ufffd")
        if not any(c in text for c in '"\r\n'):  # what csv.reader would make of it, in C
            return text.split(self.opts.delimiter)
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=self.opts.delimiter))
        except csv.Error:
            return [text]
        return rows[0] if rows else [""]

    def _text(self, body: bytes) -> str:
        return body.decode(self.opts.encoding.python, errors="replace")[:MAX_REPORTED_VALUE]

    def _column(self, index: int) -> str | None:
        return self.columns[index] or None if index < len(self.columns) else None


@dataclass
class _Record:
    raw: bytes
    line: int
    offset: int
