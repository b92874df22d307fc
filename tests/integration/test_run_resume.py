"""A resumable job resumes with a ranged read (issue 14): the resumed run reads the header and
the file from its checkpoint, never the committed part, and its line numbers, rejected rows and
reject file are those of a run that was never interrupted. Jobs checkpointed before the
checkpoint carried the line number resume by counting lines, as they always did.

The reads are counted by a wrapper around the real store object (``tests.support.reads``): a
directory, or a real S3 server process."""

from __future__ import annotations

import dataclasses
import io
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from importd.config import Settings
from importd.errors import Deferred, SoftTimeLimitExceeded
from importd.imports import rejectfile, storage, store
from importd.imports.handlers import on_import_retry, run_import_task
from tests.support.importing import context, rows
from tests.support.infra import wait_for
from tests.support.reads import count_reads, overlap
from tests.support.s3 import S3Server, s3_server  # noqa: F401 - fixture

NAMES = ["plain", '"with, comma"', '"two\nlines"', '"three\nshort\nlines"', '"quote "" inside"', ""]


def build(records: list[tuple[int, bool]], eol: str = "\n") -> bytes:
    """A file of ``people`` rows: (name choice, bad age) per record; an unquoted empty name is
    NULL (refused by NOT NULL), a bad age is refused by its type. Quoted names span lines, so
    line numbers and record numbers differ."""
    out = ["id,name,age" + eol]
    for i, (name, bad) in enumerate(records, 1):
        out.append(f"{i},{NAMES[name].replace(chr(10), eol)},{'x' if bad else i % 50}{eol}")
    return "".join(out).encode()


def many(count: int, every: int = 7) -> list[tuple[int, bool]]:
    return [(i % len(NAMES), i % every == 0) for i in range(count)]


@dataclasses.dataclass
class Outcome:
    """What a job leaves that a user sees: its row's counts, rejected rows, reject file, table."""

    state: str
    rows_imported: int
    rows_rejected: int
    rejected: list[tuple[Any, ...]]
    reject_file: bytes
    groups: list[dict[str, Any]]
    table: list[tuple[Any, ...]]


def outcome(settings: Settings, db: psycopg.Connection[Any], job_id: str) -> Outcome:
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
        rejected = list(store.iter_rejected_rows(conn, job_id))
        info = rejectfile.summary(conn, job_id)
        chunks = conn.execute("SELECT count(*) FROM importd.reject_chunks WHERE job_id = %s", (job_id,)).fetchone()
    assert rec is not None and info is not None, (rec and (rec.state, rec.error, rec.attempts, rec.checkpoint_offset))
    assert chunks == (0,)  # a finished job's committed rejects are in its file now
    data = b""
    if info["file_path"]:
        with storage.from_settings(settings).open(info["file_path"]) as f:
            data = f.read()
        assert len(data) == info["file_bytes"]
        assert storage.from_settings(settings).keys(storage.rejects_folder(job_id)) == [info["file_path"]]
    return Outcome(rec.state, rec.rows_imported, rec.rows_rejected, rejected, data, info["groups"], rows(db))


def upload(settings: Settings, data: bytes) -> dict[str, Any]:
    obj = storage.from_settings(settings).write(f"{uuid.uuid4().hex}.csv", io.BytesIO(data))
    return {"object": obj.as_args()}


def run_through(settings: Settings, args: dict[str, Any]) -> str:
    job_id = uuid.uuid4().hex
    run_import_task(context(settings, job_id, args))
    return job_id


def cut_at(settings: Settings, args: dict[str, Any], cut: int) -> tuple[str, store.JobRecord]:
    """Run a job until the checkpoint at or past byte ``cut`` commits, then stop it there (as a
    soft time limit would) and record the retry; the job's row as it was left."""
    job_id = uuid.uuid4().hex
    ctx = context(settings, job_id, args, attempt=1)

    def progress(**fields: Any) -> None:  # reported after each checkpoint commits
        if fields["bytes"] >= cut:
            ctx.request_stop("test: cut here")

    ctx.progress = progress  # type: ignore[method-assign]
    with pytest.raises(SoftTimeLimitExceeded):
        run_import_task(ctx)
    on_import_retry(ctx, SoftTimeLimitExceeded("test: cut here"))
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None and not rec.finished and rec.checkpoint_offset >= cut
    return job_id, rec


def resume(settings: Settings, args: dict[str, Any], job_id: str) -> None:
    """Run the job's second attempt, once the first one's lock is gone (a closed connection's
    backend frees it when it has exited, a moment later)."""

    def ran() -> bool:
        try:
            run_import_task(context(settings, job_id, args, attempt=2))
        except Deferred:
            return False
        return True

    wait_for(ran, 30, 0.05, what="the first attempt's lock released")


@pytest.fixture(params=["file", "s3"])
def ssettings(request: pytest.FixtureRequest, isettings: Settings, tmp_path: Path) -> Settings:
    """Settings on a store of their own: a directory, or a prefix on the S3 test server."""
    if request.param == "file":
        return dataclasses.replace(isettings, storage_url=f"file://{tmp_path}/store", import_streams=1)
    server: S3Server = request.getfixturevalue("s3_server")
    return dataclasses.replace(isettings, storage_url=server.url(f"r-{uuid.uuid4().hex[:8]}"),
                               s3_endpoint_url=server.endpoint, import_streams=1)


def test_a_resumed_run_reads_the_header_and_the_rest_of_the_file_never_the_committed_part(
        ssettings: Settings, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch):
    data = build(many(4000))  # ~80 KB in 4 KiB batches
    args = {**upload(ssettings, data), "table": "people", "mode": "resumable", "max_errors": 10_000,
            "options": {"batch_bytes": 4096}}
    whole = outcome(ssettings, db, run_through(ssettings, args))
    db.execute("TRUNCATE people")

    job_id, cut = cut_at(ssettings, args, len(data) // 2)
    assert cut.header_bytes == data.index(b"\n") + 1 and cut.checkpoint_line == 1 + data.count(
        b"\n", 0, cut.checkpoint_offset)
    reads = count_reads(ssettings, args["object"]["key"], monkeypatch)
    resume(ssettings, args, job_id)

    assert reads, "the resumed run read nothing?"
    assert overlap(reads, cut.header_bytes or 0, cut.checkpoint_offset) == 0  # the committed part: not a byte
    assert overlap(reads, 0, len(data)) == sum(b - a for a, b in reads)  # each byte at most once
    assert sum(b - a for a, b in reads) == (cut.header_bytes or 0) + len(data) - cut.checkpoint_offset
    assert outcome(ssettings, db, job_id) == whole


def test_a_job_checkpointed_before_ranged_resume_resumes_by_counting_and_keeps_its_old_reject_file(
        isettings: Settings, db: psycopg.Connection[Any]):
    """A row without the line number (checkpointed by an importd before issue 14, its committed
    rejected records in a local ``<upload>.rejects.csv``) resumes as it used to: by counting line
    ends up to the checkpoint; its old file's records are carried into the new reject file."""
    settings = dataclasses.replace(isettings, import_streams=1)
    data = build(many(1500, every=5), eol="\r\n")
    args = {**upload(settings, data), "table": "people", "mode": "resumable", "max_errors": 10_000,
            "options": {"batch_bytes": 2048}}
    whole = outcome(settings, db, run_through(settings, args))
    db.execute("TRUNCATE people")

    job_id, cut = cut_at(settings, args, len(data) // 3)
    legacy = settings.upload_dir / f"{args['object']['key']}.rejects.csv"
    with store.connect(settings) as conn:  # what an importd before issue 14 left at this checkpoint
        chunks = b"".join(bytes(r[0]) for r in conn.execute(
            "SELECT data FROM importd.reject_chunks WHERE job_id = %s ORDER BY end_offset", (job_id,)))
        records, groups = conn.execute("SELECT sum(records), (SELECT groups FROM importd.reject_chunks WHERE"
                                       " job_id = %(j)s ORDER BY end_offset DESC LIMIT 1) FROM"
                                       " importd.reject_chunks WHERE job_id = %(j)s", {"j": job_id}).fetchone()
        legacy.write_bytes(b"id,name,age\r\n" + chunks + b"9999,bytes past the checkpoint,x\r\n")
        conn.execute("INSERT INTO importd.job_rejects (job_id, file_path, file_bytes, records, groups)"
                     " VALUES (%s, %s, %s, %s, %s)", (job_id, str(legacy), 13 + len(chunks), records,
                                                      psycopg.types.json.Jsonb(groups)))
        conn.execute("DELETE FROM importd.reject_chunks WHERE job_id = %s", (job_id,))
        conn.execute("UPDATE importd.jobs SET checkpoint_line = NULL, header_bytes = NULL WHERE id = %s", (job_id,))
    assert records and chunks

    resume(settings, args, job_id)
    assert outcome(settings, db, job_id) == whole
    assert not legacy.exists()  # replaced by the file in the store


RECORDS = st.lists(st.tuples(st.integers(0, len(NAMES) - 1), st.booleans()), min_size=40, max_size=160)


@hsettings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(records=RECORDS, eol=st.sampled_from(["\n", "\r\n"]), batch=st.sampled_from([128, 256, 512]),
       where=st.floats(0.05, 0.6), streams=st.sampled_from([1, 2]))
def test_line_numbers_rejected_rows_and_the_reject_file_after_a_resume_are_those_of_an_uninterrupted_run(
        isettings: Settings, db: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        records: list[tuple[int, bool]], eol: str, batch: int, where: float, streams: int):
    settings = dataclasses.replace(isettings, storage_url=f"file://{tmp_path}/p-{uuid.uuid4().hex[:8]}",
                                   import_streams=streams)
    data = build(records, eol)
    args = {**upload(settings, data), "table": "people", "mode": "resumable", "max_errors": len(records),
            "options": {"batch_bytes": batch}}
    db.execute("TRUNCATE people")
    whole = outcome(settings, db, run_through(settings, args))
    db.execute("TRUNCATE people")

    cut = int(len(data) * where)
    job_id = uuid.uuid4().hex
    ctx = context(settings, job_id, args, attempt=1)
    ctx.progress = lambda **f: ctx.request_stop("cut") if f["bytes"] >= cut else None  # type: ignore[method-assign]
    try:
        run_import_task(ctx)
    except SoftTimeLimitExceeded:
        on_import_retry(ctx, SoftTimeLimitExceeded("cut"))
    with store.connect(settings) as conn:
        first = store.get_job(conn, job_id)
    assert first is not None
    if not first.finished:  # else the cut fell in the last batch: nothing to resume
        with monkeypatch.context() as m:
            reads = count_reads(settings, args["object"]["key"], m)
            resume(settings, args, job_id)
        assert overlap(reads, first.header_bytes or 0, first.checkpoint_offset) == 0
    assert outcome(settings, db, job_id) == whole
