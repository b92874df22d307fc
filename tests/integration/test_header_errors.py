"""A header the CSV parser cannot read is the file's fault in the worker too: FAILURE with
the reason, acked (PermanentError), never a transient error retried four times into the DLQ.

Issue 12 item 6, worker side: the ``import.csv`` handler runs in-process on the real
PostgreSQL; what it raises is what the consumer classifies (PermanentError: ack; anything
else: retry).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings

from importd.config import Settings
from importd.errors import PermanentError
from tests.support.headers import DELIMITERS, ENCODINGS, FIRST_LINES, KNOWN_BAD
from tests.support.importing import run_import


def _args(enc: str | None, delimiter: str | None) -> dict[str, Any]:
    options = {k: v for k, v in (("encoding", enc), ("delimiter", delimiter)) if v is not None}
    return {"options": options} if options else {}


@pytest.mark.parametrize("line", KNOWN_BAD, ids=range(len(KNOWN_BAD)))
def test_an_unreadable_header_is_a_failure_with_its_reason_not_a_retry(isettings: Settings, db: Any,
                                                                       line: bytes) -> None:
    """Issue 12 item 6: `"a"b,c`, `"id,name` and every other parser failure of the header end
    the job FAILURE with the parser's reason and raise PermanentError (acked, no retry)."""
    rec, raised = run_import(isettings, line + b"\n1,Ann,30,x\n", job_id=uuid.uuid4().hex)
    assert rec.state == "FAILURE", (rec.state, raised)
    assert isinstance(raised, PermanentError), repr(raised)
    assert rec.error  # the reason is recorded for the client


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(line=FIRST_LINES, enc=ENCODINGS, delimiter=DELIMITERS)
@example(line=b'"a"b,c', enc=None, delimiter=None)
@example(line=b'"id,name', enc=None, delimiter=None)
def test_any_first_line_ends_the_job_final_and_is_never_transient(isettings: Settings, db: Any, line: bytes,
                                                                 enc: str | None, delimiter: str | None) -> None:
    """Issue 12 item 6, any first line: the job ends SUCCESS or FAILURE in PostgreSQL and the
    handler raises nothing or PermanentError, so the consumer acks it instead of retrying."""
    rec, raised = run_import(isettings, line + b"\n1,Ann,30,x\n", job_id=uuid.uuid4().hex,
                             max_errors=10, **_args(enc, delimiter))
    assert rec.state in ("SUCCESS", "FAILURE"), (rec.state, raised)
    assert raised is None or isinstance(raised, PermanentError), repr(raised)
