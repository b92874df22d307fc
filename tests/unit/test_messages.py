"""Message validation: every defect is an InvalidMessage with a short reason."""

import json

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from importd.errors import InvalidMessage
from importd.worker import messages
from tests.support import hostile

TASK = {messages.TASK_HEADER: "import.csv"}


def _reason(body, headers=TASK, content_type="application/json") -> str:
    with pytest.raises(InvalidMessage) as err:
        messages.decode(body, headers, content_type)
    return err.value.reason


def test_valid_message_round_trips():
    job = messages.Job(job_id="abc-1", task="import.csv", args={"file": "f.csv"}, attempt=2)
    decoded = messages.decode(job.body(), job.headers(), "application/json", 3)
    assert decoded == messages.Job("abc-1", "import.csv", {"file": "f.csv"}, attempt=2, priority=3)


def test_missing_attempt_header_means_first_attempt():
    assert messages.decode(b'{"job_id":"a"}', TASK).attempt == 1


@pytest.mark.parametrize(("body", "reason"), [
    (b"\xff\xfe", "not-json"),
    (b"[1, 2]", "bad-shape"),
    (b'{"args": {}}', "bad-job-id"),
    (b'{"job_id": "../etc", "args": {}}', "bad-job-id"),
    (b'{"job_id": "a", "args": []}', "bad-shape"),
    (b'{"job_id": "a", "extra": 1}', "bad-shape"),
    (b"x" * (messages.MAX_BODY_BYTES + 1), "body-too-large"),
])
def test_defective_bodies_are_rejected_with_a_reason(body: bytes, reason: str):
    assert _reason(body) == reason


def test_unknown_or_missing_task_is_rejected():
    body = json.dumps({"job_id": "a"}).encode()
    assert _reason(body, {messages.TASK_HEADER: "nope"}) == "unknown-task"
    assert _reason(body, {}) == "missing-task"


def test_bad_attempt_header_is_rejected():
    body = b'{"job_id": "a"}'
    assert _reason(body, {**TASK, messages.ATTEMPT_HEADER: "x"}) == "bad-attempt"
    assert _reason(body, {**TASK, messages.ATTEMPT_HEADER: 0}) == "bad-attempt"


def test_wrong_content_type_is_rejected():
    assert _reason(b'{"job_id": "a"}', content_type="application/x-python-serialize") == "bad-content-type"


#: Any JSON value, nested a little.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
#: JSON objects shaped like a job body, each key present or not, each value of any type; the
#: job id valid half the time, so the checks behind it (args, extra fields) are reached too.
JOB_LIKE = st.fixed_dictionaries({}, optional={
    "job_id": st.from_regex(messages.JOB_ID, fullmatch=True) | st.text(max_size=40) | JSON_VALUES,
    "args": st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3) | JSON_VALUES,
    "evil": JSON_VALUES})
#: Raw bytes rarely parse as JSON, so two thirds of the bodies are JSON (any value, or job-shaped).
BODIES = st.one_of(st.binary(max_size=300), JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                   JOB_LIKE.map(lambda v: json.dumps(v).encode()))


def _outcome(body: bytes) -> str:
    try:
        messages.decode(body, TASK)
    except InvalidMessage as exc:
        return exc.reason
    return "decoded"


@settings(max_examples=1000, deadline=None)  # ~2.5 s: a defect behind the job id shows in about 1 body of 70
@given(BODIES)
def test_arbitrary_bytes_never_raise_anything_but_invalid_message(body: bytes):
    """Every defect of these bodies is one a check names: ``undecodable`` (the last resort that
    turns any other exception into an InvalidMessage) would be a check that raised by mistake."""
    assert _outcome(body) != messages.UNDECODABLE, body


@pytest.mark.parametrize("outcome", ["not-json", "bad-shape", "bad-job-id", "decoded"])
def test_the_bodies_strategy_reaches_every_check(outcome: str):
    """The strategy above is worth its examples only if it gets past json.loads and the job id:
    each outcome is found among its bodies (a strategy of raw bytes alone almost never parses)."""
    found = find(BODIES, lambda b: _outcome(b) == outcome, settings=settings(max_examples=2000, database=None))
    assert _outcome(found) == outcome


def test_the_bodies_strategy_reaches_the_args_and_extra_field_checks():
    settings_ = settings(max_examples=2000, database=None)
    args = find(BODIES, lambda b: _outcome(b) == "bad-shape" and b'"args"' in b and b'"evil"' not in b,
                settings=settings_)
    extra = find(BODIES, lambda b: _outcome(b) == "bad-shape" and b'"evil"' in b and b'"job_id"' in b,
                 settings=settings_)
    assert not isinstance(json.loads(args)["args"], dict) and "evil" in json.loads(extra)


def test_priority_out_of_range_is_rejected():
    with pytest.raises(InvalidMessage) as err:
        messages.decode(b'{"job_id": "a"}', TASK, "application/json", 200)
    assert err.value.reason == "bad-priority"


def _job_or_invalid(body, headers, content_type, priority) -> None:
    try:
        job = messages.decode(body, headers, content_type, priority)
    except InvalidMessage as exc:
        assert exc.reason  # a short reason the dead letter carries
    else:
        assert isinstance(job, messages.Job)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile.DELIVERIES)
def test_any_delivery_decodes_to_a_job_or_an_invalid_message(d: hostile.Delivery):
    """Issue 12 item 2: JSON of every shape, deep nesting, huge numbers, wrong types at every
    field and header: decode returns a Job or raises InvalidMessage, never anything else."""
    _job_or_invalid(d.body, d.headers, d.content_type, d.priority)


@settings(max_examples=200, deadline=None)
@given(headers=st.one_of(st.none(), hostile.AMQP_VALUES), content_type=hostile.AMQP_VALUES,
       priority=hostile.AMQP_VALUES)
def test_properties_of_any_type_decode_to_a_job_or_an_invalid_message(headers, content_type, priority):
    """Issue 12 item 2: the properties themselves (headers, content type, priority) may be of any type."""
    _job_or_invalid(b'{"job_id": "a"}', headers, content_type, priority)


@pytest.mark.parametrize(("body", "reason"), [
    (b"[" * 300_000, "not-json"),  # RecursionError in json.loads, not ValueError
    (b'{"job_id": "a", "args": {"n": ' + b"9" * 5000 + b"}}", "not-json"),  # int digits limit
])
def test_deep_nesting_and_huge_numbers_are_not_json(body: bytes, reason: str):
    """Issue 12 item 2: the body that crashed every child in turn."""
    assert _reason(body) == reason


@pytest.mark.parametrize("attempt", [float("inf"), float("nan"), 2**62, "9" * 6000, [1], {"a": 1}, True, -1])
def test_attempt_headers_of_wrong_type_or_size_are_bad_attempts(attempt):
    assert _reason(b'{"job_id": "a"}', {**TASK, messages.ATTEMPT_HEADER: attempt}) == "bad-attempt"


@pytest.mark.parametrize("priority", [2**70, -1, "3", 1.5, [1]])
def test_priorities_of_wrong_type_or_size_are_bad_priorities(priority):
    with pytest.raises(InvalidMessage) as err:
        messages.decode(b'{"job_id": "a"}', TASK, "application/json", priority)
    assert err.value.reason == "bad-priority"


@settings(max_examples=200, deadline=None)
@given(hostile.not_i_json())
def test_a_body_only_a_lenient_json_reader_takes_is_not_json(body: bytes):
    """Issue 12 item 2, bodies of its kind not named in it: NaN or Infinity, a lone surrogate
    escape, a duplicate key, a surrogate or invalid UTF-8 in the raw bytes, or JSON in UTF-16
    are dead-lettered as not-json at any depth: ``json.loads`` takes them all, and a lone
    surrogate or NaN would then fail a UTF-8 encoder or PostgreSQL's jsonb later, in the job."""
    assert _reason(body) == "not-json"


@pytest.mark.parametrize("body", [
    b'{"job_id": "a", "args": {"table": "people", "note": "' + b"x" * (messages.MAX_BODY_BYTES - 100) + b'"}}',
    '{"job_id": "a", "args": {"table": "caf\u00e9 \u2603 \U0001f600"}}'.encode(),
    b'{"job_id": "a", "args": {"table": "\\ud83d\\ude00"}}',  # an escaped surrogate *pair* is one character
])
def test_strict_json_still_takes_long_strings_and_any_unicode(body: bytes):
    assert messages.decode(body, TASK).job_id == "a"
