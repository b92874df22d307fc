"""Reading JSON that a client or a publisher sent: every defect is a :class:`JsonError`.

``json.loads`` alone lets a hostile text through in ways each reader would have to foresee:
nesting past the recursion limit raises ``RecursionError`` (not a ``ValueError``: issue 12
item 2 crashed every worker child with it, and the API's JSON fields answered 500); a number
past ``sys.get_int_max_str_digits()`` raises ``ValueError`` with no position; ``NaN`` and
``Infinity`` parse, although no JSON has them and PostgreSQL's ``jsonb`` refuses them; a
duplicate key silently keeps its last value (so two readers of one body can disagree on what
it says); a ``\\ud800`` escape makes a ``str`` no UTF-8 encoder, PostgreSQL, Redis or AMQP
client can write back. :func:`loads` accepts only I-JSON (RFC 7493: UTF-8, no duplicate
names, no lone surrogates) and raises :class:`JsonError` (a ``ValueError``) for everything
else, so a reader catches one type and answers with its own reason.
"""

from __future__ import annotations

import json
from typing import Any


class JsonError(ValueError):
    """The text is not (interoperable) JSON; the message says why, without echoing the text."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonError(f"duplicate key {key[:50]!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise JsonError(f"{name} is not a JSON number")


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """The value of the JSON text ``raw`` (bytes must be UTF-8); :class:`JsonError` if it is none."""
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except JsonError:
        raise
    except RecursionError:
        raise JsonError("nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise JsonError(f"not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, the int digits limit
        raise JsonError(str(exc)[:200]) from None
    _check_strings(value)
    return value


def _check_strings(value: Any) -> None:
    """Raise JsonError for a lone surrogate in any string or key (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _check_text(key)
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JsonError(f"a string holds a lone surrogate (\\u{ord(text[exc.start]):04x})") from None
