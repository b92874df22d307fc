"""Hypothesis strategies for hostile deliveries (issue 12 item 2).

``st.binary`` alone almost never makes JSON, so the bodies here are mostly JSON: objects
whose fields have every wrong type, nesting deep enough to exhaust the recursion limit,
numbers past Python's int-string limit, plus arbitrary bytes. Headers hold any AMQP value
where importd expects a task name or an attempt number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from importd.worker import messages

#: A task that exists in tests (tests.support.tasks) and on the ``default`` queue.
GOOD_TASK = "test.record"

#: Any JSON value, nested a few levels.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

#: Any value an AMQP header table can carry through py-amqp and RabbitMQ.
AMQP_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63) + 1, 2**63 - 1) | st.floats()
    | st.text(max_size=30) | st.binary(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3),
    max_leaves=10,
)

_job_ids = st.one_of(st.from_regex(messages.JOB_ID, fullmatch=True), JSON_VALUES)
_args = st.one_of(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4), JSON_VALUES)


@st.composite
def _json_objects(draw: st.DrawFn) -> bytes:
    """A JSON object with job_id and args of any type, maybe an extra field, maybe one missing."""
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["job_id"] = draw(_job_ids)
    if draw(st.booleans()):
        doc["args"] = draw(_args)
    doc.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)))
    return json.dumps(doc).encode()


#: A JSON text's places where a value may stand, for :func:`not_i_json` to put one in.
_SLOTS = ('{"job_id": %s, "args": {}}', '{"job_id": "ij", "args": %s}', '{"job_id": "ij", "args": {"table": %s}}',
          '{"job_id": "ij", "args": {"options": {"columns": {"a": %s}}}}', '{"job_id": "ij", "args": [%s]}')
#: Values json.loads takes and no other JSON reader should (RFC 7493 I-JSON): non-numbers,
#: lone surrogate escapes (high, low, reversed pair).
_NOT_I_JSON_VALUES = ("NaN", "Infinity", "-Infinity", '"\\ud800"', '"a\\udfff"', '"\\udc00\\ud800"')


@st.composite
def not_i_json(draw: st.DrawFn) -> bytes:
    """A job-shaped body that only a lenient JSON reader takes: a non-number or a lone
    surrogate at any place, a duplicate key at any level, a surrogate or invalid UTF-8 in
    the raw bytes, or a JSON text in UTF-16 (which ``json.loads`` of bytes would detect)."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return (draw(st.sampled_from(_SLOTS)) % draw(st.sampled_from(_NOT_I_JSON_VALUES))).encode()
    if kind == 1:
        return draw(st.sampled_from([b'{"job_id": "a", "job_id": "b", "args": {}}',
                                     b'{"job_id": "ij", "args": {}, "args": {"table": "people"}}',
                                     b'{"job_id": "ij", "args": {"table": "a", "table": "b"}}',
                                     b'{"job_id": "ij", "args": {"options": {"x": 1, "x": 2}}}']))
    if kind == 2:
        return b'{"job_id": "ij", "args": {"table": "\xed\xa0\x80"}}'  # a surrogate encoded in UTF-8 (CESU)
    if kind == 3:
        bad = draw(st.sampled_from([b"\xff", b"\xc3(", b"\xc0\xaf"]))
        return b'{"job_id": "ij", "args": {"table": "' + bad + b'"}}'
    return '{"job_id": "ij", "args": {}}'.encode(draw(st.sampled_from(["utf-16", "utf-16-be", "utf-32"])))


#: Nesting depth that exhausts the recursion limit of ``json.loads`` (a few hundred KB).
_deep = st.integers(min_value=5_000, max_value=300_000)

BODIES = st.one_of(
    st.binary(max_size=2000),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    _json_objects(),
    _deep.map(lambda n: b"[" * n),
    _deep.map(lambda n: b'{"job_id": "deep", "args": ' + b'{"a": ' * n),
    _deep.map(lambda n: b'{"job_id": "deep", "args": {"a": ' + b"[" * n + b"]" * n + b"}}"),
    st.integers(min_value=4_301, max_value=50_000).map(  # past sys.get_int_max_str_digits()
        lambda n: b'{"job_id": "huge", "args": {"n": ' + b"9" * n + b"}}"),
    st.sampled_from([b'{"job_id": "inf", "args": {"n": 1e999}}', b'{"job_id": 1e999}',
                     b'{"job_id": "nan", "args": NaN}', b"\x00" * 10, b"\xef\xbb\xbf{}"]),
    not_i_json(),
)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    """Task and attempt headers of any type (each may also be absent), plus stray headers."""
    out: dict[str, Any] = draw(st.dictionaries(st.text(min_size=1, max_size=10), AMQP_VALUES, max_size=2))
    if draw(st.integers(0, 3)):
        out[messages.TASK_HEADER] = draw(st.one_of(st.just(GOOD_TASK), AMQP_VALUES))
    if draw(st.booleans()):
        out[messages.ATTEMPT_HEADER] = draw(st.one_of(
            st.integers(-(2**63) + 1, 2**63 - 1), st.floats(), st.text(max_size=30),
            st.text(alphabet="0123456789", min_size=1, max_size=6000), AMQP_VALUES))
    return out


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, Any]
    content_type: str
    priority: int

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep deep bodies short
        return (f"Delivery(body={self.body[:80]!r}...({len(self.body)} bytes), headers={self.headers!r}, "
                f"content_type={self.content_type!r}, priority={self.priority})")


DELIVERIES = st.builds(
    Delivery,
    body=BODIES,
    headers=headers(),
    content_type=st.one_of(st.just(messages.CONTENT_TYPE), st.just(messages.CONTENT_TYPE), st.text(max_size=20)),
    priority=st.integers(0, 255),
)


def rejected(d: Delivery) -> bool:
    """True unless ``messages.decode`` accepts the delivery as a job (anything raised counts)."""
    try:
        messages.decode(d.body, d.headers, d.content_type, d.priority)
    except BaseException:  # noqa: BLE001 - before issue 12 item 2, RecursionError and others escaped
        return True
    return False


def is_utf8(value: bytes) -> bool:
    """Whether py-amqp's strict decode would take ``value`` (surrogates as Python writes them)."""
    try:
        value.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True
