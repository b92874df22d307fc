"""IMPORTD_UPLOAD_RETENTION: what the worker does with a job's object after SUCCESS, after
FAILURE, and when the job was given up on (its message in failed_tasks, a replay needs it)."""

from __future__ import annotations

import dataclasses
import io
import uuid
from typing import Any

import pytest

from importd.config import Settings
from importd.errors import PermanentError, TransientError
from importd.imports import storage, store
from importd.imports.handlers import on_import_give_up, run_import_task
from tests.support.importing import context

GOOD = b"id,name,age\n1,Ann,3\n2,Bob,4\n"
BAD = b"id,name,age\n1,Ann,old\n"


def stored(settings: Settings, data: bytes) -> tuple[str, dict[str, Any]]:
    """A new object in the store and the job args naming it."""
    obj = storage.from_settings(settings).write(f"{uuid.uuid4().hex}.csv", io.BytesIO(data))
    return obj.key, {"object": obj.as_args(), "table": "people"}


def run(settings: Settings, args: dict[str, Any], job_id: str | None = None) -> tuple[str, str]:
    job_id = job_id or uuid.uuid4().hex
    try:
        run_import_task(context(settings, job_id, args))
    except PermanentError:
        pass
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None
    return job_id, rec.state


@pytest.mark.parametrize(("retention", "data", "state", "kept"), [
    ("keep", GOOD, "SUCCESS", True),
    ("keep", BAD, "FAILURE", True),
    ("delete-on-success", GOOD, "SUCCESS", False),
    ("delete-on-success", BAD, "FAILURE", True),
    ("delete-when-final", GOOD, "SUCCESS", False),
    ("delete-when-final", BAD, "FAILURE", False),
    ("no-such-policy", GOOD, "SUCCESS", True),
])
def test_an_object_is_kept_or_deleted_by_the_outcome_and_the_setting(
        isettings: Settings, db: Any, retention: str, data: bytes, state: str, kept: bool):
    settings = dataclasses.replace(isettings, upload_retention=retention)
    key, args = stored(settings, data)
    assert run(settings, args)[1] == state
    assert storage.from_settings(settings).exists(key) is kept


def test_a_job_given_up_on_keeps_its_object_for_a_replay_even_when_final_ones_are_deleted(isettings, db):
    settings = dataclasses.replace(isettings, upload_retention="delete-when-final")
    key, args = stored(settings, GOOD)
    job_id = uuid.uuid4().hex
    with store.connect(settings) as conn:
        store.create_job(conn, store.JobRecord(id=job_id, target_table="people", file_path=key))
    on_import_give_up(context(settings, job_id, args, attempt=4), TransientError("database gone"))
    assert run(settings, args, job_id)[1] == "FAILURE"  # a stray delivery finds it already failed
    assert storage.from_settings(settings).exists(key)


DIRTY = b"id,name,age\n1,Ann,3\n2,Bob,old\n"


@pytest.mark.parametrize(("retention", "rejects", "max_errors", "state", "kept"), [
    ("keep", "with-upload", 1, "SUCCESS", True),  # the upload stays, so does its reject file
    ("delete-on-success", "keep", 1, "SUCCESS", True),  # the file the user fixes outlives the upload
    ("delete-on-success", "with-upload", 1, "SUCCESS", False),
    ("delete-on-success", "with-upload", 0, "FAILURE", True),
    ("delete-when-final", "with-upload", 0, "FAILURE", False),
    ("delete-when-final", "no-such-policy", 1, "SUCCESS", True),
])
def test_a_reject_file_is_kept_or_deleted_with_the_upload_by_the_setting(
        isettings: Settings, db: Any, retention: str, rejects: str, max_errors: int, state: str, kept: bool):
    settings = dataclasses.replace(isettings, upload_retention=retention, rejects_retention=rejects)
    key, args = stored(settings, DIRTY)
    job_id, reached = run(settings, {**args, "max_errors": max_errors})
    assert reached == state
    files = storage.from_settings(settings).keys(storage.rejects_folder(job_id))
    assert len(files) == (1 if kept else 0)
    if kept:
        with storage.from_settings(settings).open(files[0]) as f:
            assert f.read() == b"id,name,age\n2,Bob,old\n"

