"""Header lines no CSV parser can read, for the tests that prove such a file is the client's
fault everywhere (API 4xx, worker FAILURE), never a crash or a retry.

:data:`FIRST_LINES` draws arbitrary bytes and, more often, bytes built from the pieces a
CSV parser trips on (quotes in odd places, unclosed quotes, NUL, bare CR, invalid UTF-8,
delimiters); :data:`KNOWN_BAD` lists the reproduced cases of issue 12 item 6 and one case per
parser failure class, so each is always run.
"""

from __future__ import annotations

from hypothesis import strategies as st

#: Pieces a header parser trips on.
PIECES = [b'"', b'""', b",", b";", b"\t", b"|", b" ", b"id", b"name", b"age", b"a", b"\r", b"\x00", b"\xff",
          b"\xc3", b"\xe2\x82", b"\\", b"\\.", b"'", b"\xef\xbb\xbf"]

FIRST_LINES = st.one_of(
    st.binary(max_size=80),
    st.lists(st.sampled_from(PIECES), max_size=24).map(b"".join),
)

#: One first line per class of parser failure (issue 12 item 6 and its kind).
KNOWN_BAD = [
    b'"a"b,c',                        # csv.Error: a character after a closing quote
    b'"id,name',                      # csv.Error: unclosed quote (unexpected end of data)
    b"id," + b"x" * 200_000,          # csv.Error: a field past the csv module's field size limit
    b"id,na\xffme",                   # UnicodeDecodeError
    b"id,\x00name",                   # NUL byte
    b"",                              # no header at all
    b" ",                             # blank header
]

#: Encodings and delimiters a client may ask for, drawn with the first line.
ENCODINGS = st.sampled_from([None, "utf-8", "latin1", "sjis", "big5", "cp1252"])
DELIMITERS = st.sampled_from([None, ",", ";", "\t", "|"])
