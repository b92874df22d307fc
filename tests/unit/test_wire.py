"""Issue 12 item 2, before the consumer sees a delivery: no property of it can make the AMQP
client raise (a short-string property that is not UTF-8 did, in every child in turn), and a
``compression`` header never makes kombu inflate a body (an uncompressed body under one
crashed every child too)."""

from __future__ import annotations

from typing import Any

import amqp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd.errors import InvalidMessage
from importd.worker import messages, wire
from tests.support.hostile import is_utf8

#: Short-string properties (py-amqp writes a bytes value as it is, so any bytes reach the wire).
SHORT_STRINGS = ("content_type", "content_encoding", "correlation_id", "reply_to", "expiration", "message_id",
                 "type", "user_id", "app_id", "cluster_id")
TASK = {messages.TASK_HEADER: "import.csv"}


def _frame(**properties: Any) -> bytes:
    """The property part of a content header frame, as py-amqp's publisher writes it."""
    return amqp.Message(b"", **properties)._serialize_properties()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(SHORT_STRINGS), st.binary(max_size=40), min_size=1),
       st.dictionaries(st.text(min_size=1, max_size=8), st.binary(max_size=20) | st.text(max_size=20), max_size=3))
def test_any_bytes_in_any_short_string_property_decode_or_are_marked_undecodable(props: dict[str, bytes],
                                                                                  headers: dict[str, Any]):
    frame = _frame(application_headers={**TASK, **headers}, priority=3, **props)
    decoded, end = wire.decode_properties(frame, 0)
    assert end <= len(frame)
    strict_ok = all(is_utf8(v) for v in props.values())  # a header string that is not UTF-8 comes as bytes
    found = decoded["application_headers"]
    assert (wire.UNDECODABLE_HEADER not in found) == strict_ok, (props, found)
    assert decoded["priority"] == 3  # what follows a bad string is still read at its place
    if not strict_ok:
        with pytest.raises(InvalidMessage) as err:
            messages.decode(b'{"job_id": "a"}', found, decoded.get("content_type"), decoded["priority"])
        assert err.value.reason == "bad-properties"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_frame_bytes_never_raise(frame: bytes):
    decoded, _ = wire.decode_properties(frame, 0)
    assert isinstance(decoded.get("application_headers", {}), dict)


def test_a_non_utf8_message_id_is_read_with_replacement_and_marked():
    decoded, _ = wire.decode_properties(_frame(message_id=b"\xff\xfe", application_headers=TASK), 0)
    assert decoded["message_id"] == "\ufffd\ufffd"
    assert "UnicodeDecodeError" in decoded["application_headers"][wire.UNDECODABLE_HEADER]
    assert decoded["application_headers"][messages.TASK_HEADER] == "import.csv"


@pytest.mark.parametrize("codec", ["application/x-gzip", "zlib", "bzip2", "nonsense"])
def test_a_compression_header_is_renamed_so_kombu_never_inflates_and_decode_refuses_it(codec: str):
    decoded, _ = wire.decode_properties(_frame(application_headers={**TASK, "compression": codec}), 0)
    headers = decoded["application_headers"]
    assert "compression" not in headers and headers[wire.REFUSED_COMPRESSION_HEADER] == codec
    with pytest.raises(InvalidMessage) as err:
        messages.decode(b'{"job_id": "a"}', headers)
    assert err.value.reason == "bad-properties"


def test_a_clean_frame_decodes_as_py_amqp_does():
    frame = _frame(message_id="j1", content_type="application/json", priority=5, delivery_mode=2,
                   application_headers={**TASK, messages.ATTEMPT_HEADER: 2})
    assert wire.decode_properties(frame, 0) == wire._strict(frame, 0)
