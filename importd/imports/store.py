"""importd's durable records in PostgreSQL: migrations, the jobs table, rejected rows.

Every other module (engine, API, ops) reads and writes jobs through these functions, so the
SQL of the ``importd`` schema lives here and in ``importd/migrations/NNN_*.sql`` only.

Migrations are plain SQL files applied in version order, each in its own transaction
together with its row in ``importd.schema_migrations``, all under one session advisory
lock: two hosts running ``importd migrate`` at once serialise, and a second run finds
nothing to do.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from importd import jsontext
from importd.config import Settings
from importd.imports import targets
from importd.imports.copy.spec import Reject
from importd.imports.states import ALL, FINAL, FINAL_SQL, JobState

#: Directory of the versioned SQL migrations (``NNN_name.sql``).
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Advisory lock key that serialises migrations across hosts ("importd-migrate").
MIGRATE_LOCK_KEY = 0x1D_0A_7E_5C_4E_3A
#: Job states (:mod:`importd.imports.states`, kept here under their old names); the last three are final.
STATES = ALL
FINAL_STATES = FINAL
#: Rejected rows stored per job (all are counted in ``jobs.rows_rejected``).
MAX_STORED_REJECTS = 1000

_MIGRATION_FILE = re.compile(r"^(\d+)_[\w-]+\.sql$")


@dataclass
class JobRecord:
    """One row of ``importd.jobs``."""

    id: str
    task: str = "import.csv"
    target_table: str | None = None
    file_path: str | None = None
    file_size: int | None = None
    checksum: str | None = None
    state: str = JobState.PENDING
    priority: int = 0
    mode: str = "atomic"
    options: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    rows_imported: int = 0
    rows_rejected: int = 0
    checkpoint_offset: int = 0
    checkpoint_rows: int = 0
    checkpoint_rejected: int = 0
    #: Physical line number of the record at ``checkpoint_offset``; None on a row checkpointed
    #: before migration 004 (the run then counts lines up to the offset).
    checkpoint_line: int | None = None
    #: Bytes of the file's header record, written with the checkpoint (None: not known).
    header_bytes: int | None = None
    error: str | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False
    worker: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    #: What the job was before each replay of a dead letter (issue 12 item 3), oldest first.
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (timestamps as ISO 8601 strings)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


_COLUMNS = [f.name for f in fields(JobRecord)]
_SELECT = sql.SQL("SELECT {} FROM importd.jobs").format(sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)))
#: The job row's columns as SQL text, composed once: a statement built per call from
#: ``sql.Identifier`` objects cost a small job ~0.2 ms of the worker's CPU per statement.
_RETURNING = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)).as_string()


def connect(settings: Settings, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """A new connection to importd's database (autocommit unless asked otherwise)."""
    kwargs.setdefault("application_name", "importd")
    kwargs.setdefault("connect_timeout", 10)
    return psycopg.connect(settings.database_url, autocommit=autocommit, **kwargs)


def pool(settings: Settings, min_size: int = 1, max_size: int = 10) -> Any:
    """A psycopg_pool.ConnectionPool of autocommit connections (for the API); open it yourself."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(settings.database_url, min_size=min_size, max_size=max_size, open=False,
                          kwargs={"autocommit": True, "application_name": "importd-api"})


# -- migrations ---------------------------------------------------------------------------

def migration_files() -> list[tuple[int, Path]]:
    """The migrations shipped with importd, in version order."""
    found = []
    for path in MIGRATIONS_DIR.glob("*.sql"):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def migrate(settings: Settings) -> list[int]:
    """Apply the migrations not applied yet; return their versions (empty: up to date)."""
    applied: list[int] = []
    with connect(settings) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS importd")
            conn.execute("CREATE TABLE IF NOT EXISTS importd.schema_migrations ("
                         " version integer PRIMARY KEY, name text NOT NULL,"
                         " applied_at timestamptz NOT NULL DEFAULT now())")
            done = {row[0] for row in conn.execute("SELECT version FROM importd.schema_migrations")}
            for version, path in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text())  # type: ignore[arg-type]  # our own file
                    conn.execute("INSERT INTO importd.schema_migrations (version, name) VALUES (%s, %s)",
                                 (version, path.name))
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))
    return applied


# -- jobs ---------------------------------------------------------------------------------

def create_job(conn: psycopg.Connection[Any], rec: JobRecord) -> JobRecord:
    """Insert ``rec`` (timestamps default to now); return the stored row."""
    values = {k: v for k, v in asdict(rec).items()
              if k not in ("created_at", "updated_at") or v is not None}
    values["options"] = Jsonb(values.get("options") or {})
    values["history"] = Jsonb(values.get("history") or [])
    query = sql.SQL("INSERT INTO importd.jobs ({}) VALUES ({}) RETURNING {}").format(
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder(k) for k in values),
        sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
    )
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        cur.execute(query, values)
        row = cur.fetchone()
    assert row is not None
    return row


def get_job(conn: psycopg.Connection[Any], job_id: str, *, for_update: bool = False) -> JobRecord | None:
    query = _SELECT + sql.SQL(" WHERE id = %s") + (sql.SQL(" FOR UPDATE") if for_update else sql.SQL(""))
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        return cur.execute(query, (job_id,)).fetchone()


def get_job_by_idempotency_key(conn: psycopg.Connection[Any], key: str) -> JobRecord | None:
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        return cur.execute(_SELECT + sql.SQL(" WHERE idempotency_key = %s"), (key,)).fetchone()


def update_job(conn: psycopg.Connection[Any], job_id: str, *, only_unfinished: bool = False,
               **values: Any) -> JobRecord | None:
    """Set columns of one job (``updated_at`` too); None if no row matched.

    ``only_unfinished`` leaves a job in a final state untouched (a late retry hook must not
    turn a SUCCESS back into RETRY). Pass ``finished_at=NOW``/``started_at=NOW`` for the
    time of the statement: ``clock_timestamp()``, since ``now()`` is when the transaction began
    and an atomic import finishes in the transaction that loaded it (minutes earlier).
    """
    if "options" in values:
        values["options"] = Jsonb(values["options"])
    query = _update_sql(tuple((k, v is NOW) for k, v in values.items()), only_unfinished)
    params = {k: v for k, v in values.items() if v is not NOW}
    params["_id"] = job_id
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        return cur.execute(query, params).fetchone()


@functools.lru_cache(maxsize=64)
def _update_sql(columns: tuple[tuple[str, bool], ...], only_unfinished: bool) -> str:
    """The UPDATE of :func:`update_job` for these (column, set to NOW) pairs, composed once."""
    sets: list[sql.Composable] = [
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.SQL("clock_timestamp()") if now
        else sql.Placeholder(k)) for k, now in columns]
    sets.append(sql.SQL("updated_at = clock_timestamp()"))
    return sql.SQL("UPDATE importd.jobs SET {} WHERE id = %(_id)s{} RETURNING {}").format(
        sql.SQL(", ").join(sets),
        sql.SQL(f" AND state NOT IN ({FINAL_SQL})") if only_unfinished else sql.SQL(""),
        sql.SQL(_RETURNING),
    ).as_string()


#: Marks a job STARTED (see :func:`start_job`).
_START = (f"UPDATE importd.jobs SET state = '{JobState.STARTED}', attempts = %s, worker = %s, error = NULL,"
          " started_at = coalesce(started_at, now()), updated_at = now()"
          f" WHERE id = %s AND state NOT IN ({FINAL_SQL}) AND NOT cancel_requested"
          f" RETURNING {_RETURNING}")
#: A start is committed without waiting for its WAL flush (``synchronous_commit`` off for that
#: one transaction, :func:`lock_and_start`): the job's outcome is committed synchronously later
#: on the same server, and that flush carries the start with it (WAL is flushed in order), so
#: a crash can lose a start only together with everything after it, as if the worker had died
#: just before starting. One fsync wait less per job.
_ASYNC_COMMIT = "SELECT set_config('synchronous_commit', 'off', true)"


def start_job(conn: psycopg.Connection[Any], job_id: str, attempt: int, worker: str) -> JobRecord | None:
    """Mark a job STARTED (attempt, worker, first start time) unless it is final or a cancel
    was requested; None if it was not started (or has no row)."""
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        return cur.execute(_START, (attempt, worker, job_id)).fetchone()


@functools.lru_cache(maxsize=4)
def _lock_and_start_sql(lock: str) -> str:
    """The statement of :func:`lock_and_start` around the lock statement ``lock``, composed once."""
    columns = sql.SQL(", ").join(sql.SQL("importd.jobs.{}").format(sql.Identifier(c)) for c in _COLUMNS)
    return sql.SQL(
        f"WITH c AS MATERIALIZED ({_ASYNC_COMMIT}), l AS MATERIALIZED ({lock} AS got FROM c),"
        f" s AS (UPDATE importd.jobs SET state = '{JobState.STARTED}', attempts = %s, worker = %s, error = NULL,"
        " started_at = coalesce(started_at, now()), updated_at = now()"
        f" FROM l WHERE l.got AND id = %s AND state NOT IN ({FINAL_SQL}) AND NOT cancel_requested"
        " RETURNING {}) SELECT l.got, s.* FROM l LEFT JOIN s ON true").format(columns).as_string()


def lock_and_start(conn: psycopg.Connection[Any], lock: str, key: str, job_id: str, attempt: int,
                   worker: str) -> tuple[bool, JobRecord | None]:
    """Take a job's advisory lock with the statement ``lock`` (one parameter, ``key``) and, if
    it was free, start the job as :func:`start_job` does, in one statement: (locked, the
    started row or None). One round trip less per job, which small files are mostly made of.
    The lock is a materialized CTE, taken once before the UPDATE reads it. Run in autocommit
    mode: the statement is its own transaction, committed without a flush wait
    (:data:`_ASYNC_COMMIT`)."""
    row = conn.execute(_lock_and_start_sql(lock), (key, attempt, worker, job_id)).fetchone()
    if row is None or not row[0]:
        return False, None
    return True, (JobRecord(**dict(zip(_COLUMNS, row[1:], strict=True))) if row[1] is not None else None)


@dataclass(frozen=True)
class RejectsRow:
    """A job's reject file as ``importd.job_rejects`` records it (:mod:`importd.imports.rejectfile`):
    its key in the upload store ('' when the job rejected nothing and none was written), its
    length, the records in it and their groups."""

    file_path: str
    file_bytes: int
    records: int
    groups: list[dict[str, Any]]


#: The end of a run: the final state and counts, unless the job is final already.
_FINISH = ("UPDATE importd.jobs SET state = %(state)s, error = %(error)s, rows_imported = %(rows)s,"
           " rows_rejected = %(rejected)s, finished_at = clock_timestamp(), updated_at = clock_timestamp()"
           f" WHERE id = %(id)s AND state NOT IN ({FINAL_SQL})")
#: The same with the job's reject-file row, and (RETURNING) the file the row named before (a
#: superseded run's, to remove once this one is durable): every part of a statement sees the
#: table as it was before the statement, so ``old`` reads the row the INSERT replaces.
_FINISH_WITH_REJECTS = (
    "WITH old AS (SELECT file_path FROM importd.job_rejects WHERE job_id = %(id)s),"
    " r AS (INSERT INTO importd.job_rejects (job_id, file_path, file_bytes, records, groups)"
    " VALUES (%(id)s, %(file_path)s, %(file_bytes)s, %(records)s, %(groups)s)"
    " ON CONFLICT (job_id) DO UPDATE SET file_path = excluded.file_path, file_bytes = excluded.file_bytes,"
    f" records = excluded.records, groups = excluded.groups, updated_at = now()) {_FINISH}")


def finish_job(conn: psycopg.Connection[Any], job_id: str, state: str, error: str | None, rows: int,
               rejected: int, rejects: RejectsRow | None) -> tuple[bool, str | None]:
    """End an unfinished job: ``state``, ``error``, the counts, ``finished_at`` (the statement's
    time) and, if given, its reject-file row, in one statement (one round trip) in the caller's
    transaction. Returns whether the job was ended (False: it was final already, nothing
    written) and the reject file the job's row named before."""
    params: dict[str, Any] = {"state": state, "error": error, "rows": rows, "rejected": rejected, "id": job_id}
    if rejects is None:
        return conn.execute(_FINISH + " RETURNING id", params).fetchone() is not None, None
    params.update(file_path=rejects.file_path, file_bytes=rejects.file_bytes, records=rejects.records,
                  groups=Jsonb(rejects.groups))
    row = conn.execute(_FINISH_WITH_REJECTS + " RETURNING id, (SELECT file_path FROM old)", params).fetchone()
    return row is not None, (row[1] if row else None)


def advance_checkpoint(conn: psycopg.Connection[Any], job_id: str, *, previous: int, offset: int, rows: int,
                       rejected: int, line: int | None = None, header_bytes: int | None = None) -> bool:
    """Move a resumable job's checkpoint from ``previous`` to ``offset`` (in the caller's
    transaction, with the batch it covers); False if the checkpoint is not at ``previous``.

    ``line`` (the physical line number of the record at ``offset``) and ``header_bytes`` (the
    header record's length) go in the same statement, so a resumed run can read the header
    and then the file from ``offset`` with two ranged reads, trusting the line number instead
    of counting the line ends of the committed part (issue 14).

    This is the fence of issue 12 item 4: the job's advisory lock lives on one connection of
    the run, but batches commit on every stream's connection. A run whose lock was lost (its
    main backend died) and a redelivery that took the lock can both be committing; the
    compare-and-set lets only one of them move the checkpoint past a given offset, and the
    other rolls its batch back instead of loading it twice. The row lock of the UPDATE makes
    two concurrent attempts wait for each other, and the second then sees the moved offset.
    """
    row = conn.execute(
        "UPDATE importd.jobs SET checkpoint_offset = %s, checkpoint_rows = %s, checkpoint_rejected = %s,"
        " checkpoint_line = %s, header_bytes = %s, rows_imported = %s, rows_rejected = %s,"
        " updated_at = clock_timestamp()"
        f" WHERE id = %s AND checkpoint_offset = %s AND state NOT IN ({FINAL_SQL})"
        " RETURNING id", (offset, rows, rejected, line, header_bytes, rows, rejected, job_id, previous)).fetchone()
    return row is not None


#: Reopens a job for a replayed dead letter: what it was goes to ``history`` with the replay
#: id, a FAILURE goes back to PENDING, the attempt count starts over, and the counters go
#: back to what stays in the table (the checkpoint of a resumable job, nothing otherwise).
#: A replay id already in ``history`` matches nothing: the reopening is idempotent.
_REOPEN = (
    "UPDATE importd.jobs SET"
    " history = history || jsonb_build_array(jsonb_build_object("
    "   'replay_id', %(replay)s::text, 'replayed_at', clock_timestamp(), 'state', state, 'error', error,"
    "   'attempts', attempts, 'rows_imported', rows_imported, 'rows_rejected', rows_rejected,"
    "   'worker', worker, 'started_at', started_at, 'finished_at', finished_at)),"
    f" state = CASE WHEN state = '{JobState.FAILURE}' THEN '{JobState.PENDING}' ELSE state END,"
    " attempts = 0, error = NULL, finished_at = NULL, updated_at = clock_timestamp(),"
    " rows_imported = CASE WHEN mode = 'resumable' THEN checkpoint_rows ELSE 0 END,"
    " rows_rejected = CASE WHEN mode = 'resumable' THEN checkpoint_rejected ELSE 0 END"
    f" WHERE id = %(id)s AND state NOT IN ('{JobState.SUCCESS}', '{JobState.CANCELLED}')"
    " AND NOT history @> jsonb_build_array(jsonb_build_object('replay_id', %(replay)s::text))"
    " RETURNING {}")


def reopen_for_replay(conn: psycopg.Connection[Any], job_id: str, replay_id: str) -> JobRecord | None:
    """Reopen a job for replay ``replay_id`` (issue 12 item 3); None if there was nothing to do.

    Nothing is done for a job that ended SUCCESS (a replay never runs it again) or CANCELLED
    (someone asked it to stop), for a job without a row, or when this replay id reopened the
    job already (a second copy of the same replayed dead letter). The caller holds the job's
    advisory lock, so no delivery is running it. The rejected rows of a job that starts over
    (no checkpoint) go with the reopening; a resumable job drops those past its checkpoint
    when it resumes.
    """
    query = sql.SQL(_REOPEN).format(sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)))
    with conn.transaction():
        with conn.cursor(row_factory=class_row(JobRecord)) as cur:
            rec = cur.execute(query, {"id": job_id, "replay": replay_id}).fetchone()
        if rec is not None and not rec.checkpoint_offset:  # it starts over: its old report goes
            delete_rejected_rows(conn, job_id)
    return rec


class _Now:
    def __repr__(self) -> str:
        return "NOW"


#: Marker value for :func:`update_job`: the column is set to the database's clock_timestamp().
NOW: Any = _Now()


def list_jobs(conn: psycopg.Connection[Any], state: str | None = None, limit: int = 50,
              cursor: str | None = None, table: str | None = None) -> tuple[list[JobRecord], str | None]:
    """Jobs newest first (of one ``table`` if given); ``cursor`` is the opaque ``next_cursor``
    of the previous page."""
    limit = max(1, min(int(limit), 1000))
    where: list[sql.Composable] = []
    params: list[Any] = []
    if state:
        where.append(sql.SQL("state = %s"))
        params.append(state)
    if table:  # "people", "public.people" and " public.people " name one table: jobs keep what was sent
        schema, name = targets.split_name(table)
        where.append(sql.SQL("btrim(target_table) = ANY(%s)"))
        params.append([f"{schema}.{name}", *([name] if schema == "public" else [])])
    if cursor:
        created, job_id = _decode_cursor(cursor)
        where.append(sql.SQL("(created_at, id) < (%s::timestamptz, %s)"))
        params += [created, job_id]
    query: sql.Composable = _SELECT
    if where:
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
    query += sql.SQL(" ORDER BY created_at DESC, id DESC LIMIT %s")
    params.append(limit + 1)
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        rows = cur.execute(query, params).fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = _encode_cursor(last.created_at, last.id)
    return rows, next_cursor


def _encode_cursor(created: datetime | None, job_id: str) -> str:
    raw = json.dumps([created.isoformat() if created else None, job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    """(created_at, id) of a cursor :func:`_encode_cursor` made; ValueError for anything else
    (a cursor that decodes to other JSON must not reach PostgreSQL's timestamp cast)."""
    try:
        created, job_id = jsontext.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(created, str) or not isinstance(job_id, str) or "\x00" in job_id \
                or datetime.fromisoformat(created).tzinfo is None:
            raise ValueError("not a cursor of list_jobs")
        return created, job_id
    except (ValueError, TypeError) as exc:  # jsontext.JsonError and binascii.Error are ValueErrors
        raise ValueError(f"bad cursor {cursor[:100]!r}") from exc


def request_cancel(conn: psycopg.Connection[Any], job_id: str) -> JobRecord | None:
    """Ask a job to stop: a job not yet running becomes CANCELLED at once; a running job gets
    ``cancel_requested`` and the engine stops it between batches; a final job is unchanged."""
    query = sql.SQL(
        "UPDATE importd.jobs SET cancel_requested = true, updated_at = now(),"
        f" state = CASE WHEN state IN ('{JobState.PENDING}', '{JobState.RETRY}') THEN '{JobState.CANCELLED}'"
        " ELSE state END,"
        f" finished_at = CASE WHEN state IN ('{JobState.PENDING}', '{JobState.RETRY}') THEN now() ELSE finished_at END"
        f" WHERE id = %s AND state NOT IN ({FINAL_SQL}) RETURNING {{}}"
    ).format(sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)))
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        row = cur.execute(query, (job_id,)).fetchone()
    return row if row is not None else get_job(conn, job_id)


def counts_by_state(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts = {str(state): 0 for state in STATES}
    for state, n in conn.execute("SELECT state, count(*) FROM importd.jobs GROUP BY state"):
        counts[state] = int(n)
    return counts


# -- rejected rows ------------------------------------------------------------------------

#: One rejected row: (line_number, column_name, value, reason).


def add_rejected_rows(conn: psycopg.Connection[Any], job_id: str, rows: list[Reject]) -> None:
    """Store rejected rows (the caller keeps the per-job total under MAX_STORED_REJECTS)."""
    if not rows:
        return
    with conn.cursor() as cur:
        with cur.copy("COPY importd.rejected_rows (job_id, line_number, column_name, value, reason)"
                      " FROM STDIN") as copy:
            for line, column, value, reason in rows:
                copy.write_row((job_id, line, column, _clean(value), _clean(reason)))


def _clean(text: str | None) -> str | None:
    """Text PostgreSQL accepts (no NUL)."""
    return None if text is None else text.replace("\x00", "\\x00")


def delete_rejected_rows(conn: psycopg.Connection[Any], job_id: str) -> None:
    conn.execute("DELETE FROM importd.rejected_rows WHERE job_id = %s", (job_id,))


def iter_rejected_rows(conn: psycopg.Connection[Any], job_id: str) -> Iterator[tuple[Any, ...]]:
    """(line_number, column_name, value, reason) in file order, streamed."""
    with conn.cursor() as cur:
        cur.execute("SELECT line_number, column_name, value, reason FROM importd.rejected_rows"
                    " WHERE job_id = %s ORDER BY line_number, id", (job_id,))
        yield from cur
