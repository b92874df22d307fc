"""Issue 12 items 1 and 2 for ``import.csv`` messages whose envelope is valid and whose
arguments are hostile: wrong types at every field, NUL, lone surrogates, numbers no column or
read can hold. The handler runs in-process on the real PostgreSQL (what it raises is what the
consumer classifies). Before the fix, text PostgreSQL refuses was acked as the FAILURE of a
job that had no row (the message was lost: no row, no dead letter), a client-side encoding
error or an OverflowError mid-run was retried four times as if the server had failed.

The rule proved: every message ends in exactly one of (a) a final job row (SUCCESS, or
FAILURE with the reason) or (b) InvalidMessage ``bad-args`` with no job row (the consumer
dead-letters it with that reason); never a PermanentError without a durable FAILURE, never
a transient error.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from importd.errors import InvalidMessage, PermanentError
from importd.imports import store
from importd.imports.handlers import run_import_task
from tests.support.importing import context, write
from tests.support.s3 import S3Server, s3_server  # noqa: F401 - fixture
from tests.support.s3proxy import StoreProxy

GOOD = b"id,name,age\n1,ann,31\n"
#: Values of every type and the text no job row can hold, for any field.
HOSTILE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.sampled_from(["a\x00b", "\ud800", "x\udfff", "z" * 5000, 10**20, 2**63, -1, "9" * 40, "\\t", "people"]),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from(
        ["key", "size", "sha256", "id", "name", "\x00", "\udcff"]), inner, max_size=2),
    max_leaves=6)
OPTIONS = st.dictionaries(st.sampled_from(["max_errors", "validate_only", "delimiter", "encoding", "columns",
                                           "on_conflict", "conflict_key", "max_line_bytes", "max_field_bytes",
                                           "batch_bytes"]), HOSTILE, max_size=3)


def _outcome(settings: Settings, args: dict[str, Any]) -> tuple[BaseException | None, store.JobRecord | None]:
    job_id = uuid.uuid4().hex
    raised: BaseException | None = None
    try:
        run_import_task(context(settings, job_id, args))
    except Exception as exc:  # noqa: BLE001 - judged below
        raised = exc
    with store.connect(settings) as conn:
        return raised, store.get_job(conn, job_id)


def _assert_one_durable_outcome(raised: BaseException | None, rec: store.JobRecord | None) -> None:
    if isinstance(raised, InvalidMessage):
        assert raised.reason == "bad-args" and rec is None, (raised, rec)
    elif isinstance(raised, PermanentError):
        assert rec is not None and rec.state == "FAILURE" and rec.error, (raised, rec)
    else:
        assert raised is None, repr(raised)
        assert rec is not None and rec.finished, rec


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(table=st.one_of(st.just("people"), HOSTILE), file=st.booleans(), obj=st.one_of(st.none(), HOSTILE),
       options=st.one_of(OPTIONS, HOSTILE), mode=st.one_of(st.just("atomic"), HOSTILE),
       max_errors=st.one_of(st.none(), HOSTILE))
@example(table="people\x00", file=True, obj=None, options={}, mode="atomic", max_errors=None)
@example(table="pe\ud800ople", file=True, obj=None, options={}, mode="atomic", max_errors=None)
@example(table="people", file=True, obj=None, options={"columns": {"id\x00": "id"}}, mode="atomic",
         max_errors=None)
@example(table="people", file=True, obj=None, options={"batch_bytes": 10**20}, mode="atomic", max_errors=None)
@example(table="people", file=False, obj={"key": "k", "size": 10**30}, options={}, mode="atomic",
         max_errors=None)
def test_hostile_arguments_end_in_one_durable_outcome_or_a_bad_args_dead_letter(
        isettings: Settings, db: Any, table: Any, file: bool, obj: Any, options: Any, mode: Any,
        max_errors: Any) -> None:
    args: dict[str, Any] = {"table": table, "mode": mode, "options": options}
    if file:
        args["file"] = str(write(isettings, GOOD))
    if obj is not None:
        args["object"] = obj
    if max_errors is not None:
        args["max_errors"] = max_errors
    _assert_one_durable_outcome(*_outcome(isettings, args))


def test_a_file_gone_between_its_size_and_its_read_is_a_recorded_failure_not_a_lost_job(
        isettings: Settings, db: Any, s3_server: S3Server) -> None:  # noqa: F811
    """Issue 12 item 1: the store's ObjectNotFound is a PermanentError raised inside the run,
    past the point where the run records its own FAILURE. It was acked as an outcome with the
    job left STARTED for good (nothing in failed_tasks, no retry). Here the object's HEAD
    succeeds and its GET answers 404, as when it is deleted in between."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    proxy = StoreProxy("127.0.0.1", s3_server.port)
    try:
        settings = dataclasses.replace(isettings, storage_url=s3_server.url(prefix), s3_endpoint_url=proxy.endpoint)
        key = "gone.csv"
        s3_server.store(prefix).write(key, _Bytes(GOOD))  # type: ignore[arg-type]
        proxy.missing_gets = True
        raised, rec = _outcome(settings, {"object": {"key": key, "size": len(GOOD)}, "table": "people"})
    finally:
        proxy.close()
    assert isinstance(raised, PermanentError), repr(raised)
    assert rec is not None and rec.state == "FAILURE" and "ObjectNotFound" in (rec.error or ""), rec
    _assert_one_durable_outcome(raised, rec)


class _Bytes:
    """A readable of fixed bytes for a store's ``write``."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, n: int = -1) -> bytes:
        out, self.data = (self.data, b"") if n is None or n < 0 else (self.data[:n], self.data[n:])
        return out
