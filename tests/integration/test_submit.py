"""Submitting imports: the file is copied, checked, recorded PENDING and published once."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from importd.imports import store
from importd.imports.progress import Progress
from importd.imports.submit import SubmitError, submit
from importd.worker.publisher import Publisher

DATA = b"id,name,age\n1,Ann,3\n"



@pytest.fixture
def publisher(isettings):
    p = Publisher(isettings)
    yield p
    p.close()


def test_submit_copies_the_file_records_the_job_and_publishes_it(isettings, db, broker, publisher, tmp_path: Path):
    source = tmp_path / "people.csv"
    source.write_bytes(DATA)
    rec = submit(isettings, source, "people", priority=7, mode="resumable", max_errors=3,
                 options={"delimiter": ","}, publisher=publisher)
    assert rec.file_path == f"{rec.id}.csv"  # a key in the store, never a host path
    stored = isettings.upload_dir / rec.file_path
    assert stored.read_bytes() == DATA and stored != source
    assert (rec.state, rec.priority, rec.mode, rec.file_size) == ("PENDING", 7, "resumable", len(DATA))
    assert rec.checksum == "sha256:" + hashlib.sha256(DATA).hexdigest()
    assert rec.options == {"delimiter": ",", "max_errors": 3, "validate_only": False}
    (message,) = broker.get_all("import_queue")
    assert message.properties["message_id"] == rec.id and message.properties["priority"] == 7
    assert message.headers["x-importd-task"] == "import.csv"
    assert json.loads(message.body) == {"job_id": rec.id, "args": {
        "object": {"key": rec.file_path, "size": len(DATA), "sha256": hashlib.sha256(DATA).hexdigest()},
        "table": "people", "mode": "resumable", "max_errors": 3, "validate_only": False,
        "options": {"delimiter": ","}}}
    assert Progress(isettings).read(rec.id)["state"] == "PENDING"  # type: ignore[index]


def test_submit_refuses_a_header_that_cannot_load_and_queues_nothing(isettings, db, broker, publisher):
    with pytest.raises(SubmitError) as info:
        submit(isettings, io.BytesIO(b"id,shoe\n1,2\n"), "people", publisher=publisher)
    assert info.value.problems == ["unknown header columns for public.people: shoe",
                                   "NOT NULL columns without default missing from the header: name"]
    with pytest.raises(SubmitError, match="not on the allowlist"):
        submit(isettings, io.BytesIO(DATA), "pg_authid", publisher=publisher)
    with pytest.raises(SubmitError, match="the file is empty"):
        submit(isettings, io.BytesIO(b""), "people", publisher=publisher)
    assert broker.depth("import_queue") == 0
    assert not [p for p in isettings.upload_dir.iterdir() if p.name.startswith(".")]


def test_submit_with_the_same_idempotency_key_returns_the_first_job(isettings, db, broker, publisher):
    first = submit(isettings, io.BytesIO(DATA), "people", idempotency_key="k-" + str(id(db)), publisher=publisher)
    again = submit(isettings, io.BytesIO(DATA), "people", idempotency_key="k-" + str(id(db)), publisher=publisher)
    assert again.id == first.id
    assert broker.depth("import_queue") == 1
    with store.connect(isettings) as conn:
        assert store.get_job(conn, first.id) is not None


def test_submit_can_move_an_upload_already_on_disk_instead_of_copying_it(isettings, db, broker, publisher):
    staged = isettings.upload_dir / "incoming.part"
    staged.write_bytes(DATA)
    rec = submit(isettings, staged, "people", publisher=publisher, move=True)
    assert not staged.exists() and (isettings.upload_dir / (rec.file_path or "")).read_bytes() == DATA
    assert rec.checksum == "sha256:" + hashlib.sha256(DATA).hexdigest()


def test_the_pending_state_is_in_redis_before_the_job_is_published(isettings, db, broker):
    """Written after publishing, PENDING could overwrite a fast worker's STARTED."""
    seen = []

    class Watching(Publisher):
        def publish(self, job, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((Progress(isettings).read(job.job_id) or {}).get("state"))
            return super().publish(job, *args, **kwargs)

    publisher = Watching(isettings)
    try:
        submit(isettings, io.BytesIO(DATA), "people", publisher=publisher)
    finally:
        publisher.close()
    assert seen == ["PENDING"]
