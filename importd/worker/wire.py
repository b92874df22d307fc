"""What the AMQP libraries do with a delivery before importd sees it, made safe (issue 12 item 2).

Two properties of a delivery broke a worker child inside ``drain_events``, before the
consumer had a message it could dead-letter, so the broker handed the delivery to the next
child, and the next, while the queue behind it stalled:

- a short-string property (``message_id``, ``content_type``, ``correlation_id``, ...) that
  is not UTF-8: py-amqp decodes every property strictly and raises ``UnicodeDecodeError``
  (RabbitMQ passes such bytes on unchecked);
- a ``compression`` header: kombu decompresses the body while it builds the message, and its
  consumer re-raises the error when the body is not compressed (a small body that is can
  expand to gigabytes in the child).

:func:`install` puts :func:`decode_properties` in py-amqp's table of property decoders
(``amqp.serialization.PROPERTY_CLASSES``, looked up per frame). It never raises: what the
strict decoder refuses is read again leniently (strings with U+FFFD for bad bytes, a header
table that cannot be read dropped) and marked with :data:`UNDECODABLE_HEADER`; a
``compression`` header is renamed :data:`REFUSED_COMPRESSION_HEADER` so kombu never inflates
anything. :func:`importd.worker.messages.decode` dead-letters both as ``bad-properties``.
Every AMQP connection importd opens goes through
:func:`importd.worker.publisher.broker_connection`, which installs it, so ``importd dlq``
and ``replay-dlq`` read such dead letters too.
"""

from __future__ import annotations

import struct
from typing import Any

from amqp import serialization
from amqp.spec import Basic

#: Header importd sets on a delivery whose properties could not be decoded as sent (its value says why).
UNDECODABLE_HEADER = "x-importd-undecodable"
#: kombu's header naming a body compression (kombu inflates the body when it is present).
COMPRESSION_HEADER = "compression"
#: What :data:`COMPRESSION_HEADER` is renamed to, so kombu leaves the body alone.
REFUSED_COMPRESSION_HEADER = "x-importd-compression"

#: The basic properties in py-amqp's order: (flag bit, name, kind: s short string,
#: F table, B octet, Q 64-bit timestamp).
_FIELDS = (
    (0x8000, "content_type", "s"), (0x4000, "content_encoding", "s"), (0x2000, "application_headers", "F"),
    (0x1000, "delivery_mode", "B"), (0x0800, "priority", "B"), (0x0400, "correlation_id", "s"),
    (0x0200, "reply_to", "s"), (0x0100, "expiration", "s"), (0x0080, "message_id", "s"),
    (0x0040, "timestamp", "Q"), (0x0020, "type", "s"), (0x0010, "user_id", "s"), (0x0008, "app_id", "s"),
    (0x0004, "cluster_id", "s"),
)

#: py-amqp's own decoder, kept before :func:`install` replaces it.
_strict = serialization.decode_properties_basic


def decode_properties(buf: Any, offset: int) -> tuple[dict[str, Any], int]:
    """py-amqp's decoder of basic properties, never raising (see the module docstring)."""
    try:
        props, end = _strict(buf, offset)
    except Exception as exc:  # noqa: BLE001 - any defect of the frame: read what can be read
        props, end = _lenient(buf, offset, f"{type(exc).__name__}: {exc}"[:200])
    headers = props.get("application_headers")
    if isinstance(headers, dict) and COMPRESSION_HEADER in headers:
        headers = dict(headers)
        headers[REFUSED_COMPRESSION_HEADER] = headers.pop(COMPRESSION_HEADER)
        props["application_headers"] = headers
    return props, end


def _lenient(buf: Any, offset: int, why: str) -> tuple[dict[str, Any], int]:
    """The properties read without failing, with :data:`UNDECODABLE_HEADER` saying ``why``."""
    props: dict[str, Any] = {}
    headers: dict[str, Any] = {}
    try:
        (flags,) = struct.unpack_from(">H", buf, offset)
        offset += 2
        for flag, name, kind in _FIELDS:
            if not flags & flag:
                continue
            if kind == "s":
                size = buf[offset]
                props[name] = bytes(buf[offset + 1:offset + 1 + size]).decode("utf-8", "replace")
                offset += 1 + size
            elif kind == "F":
                (size,) = struct.unpack_from(">I", buf, offset)
                try:
                    (table,), _ = serialization.loads("F", buf, offset)
                    headers = dict(table)
                except Exception:  # noqa: BLE001 - the table is dropped; its length lets the rest be read
                    headers = {}
                offset += 4 + size
            elif kind == "B":
                props[name] = buf[offset]
                offset += 1
            else:
                (props[name],) = struct.unpack_from(">Q", buf, offset)
                offset += 8
    except Exception:  # noqa: BLE001 - a truncated property list: what was read stays
        pass
    headers[UNDECODABLE_HEADER] = why
    props["application_headers"] = headers
    return props, offset


def install() -> None:
    """Make :func:`decode_properties` py-amqp's decoder of basic properties (idempotent)."""
    serialization.PROPERTY_CLASSES[Basic.CLASS_ID] = decode_properties
