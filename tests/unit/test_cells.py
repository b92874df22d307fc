"""The preview reads a record's fields as COPY does: :func:`cells.pg_fields` agrees with the
fast :func:`cells.split` wherever that one answers, and reads the records it leaves alone
(a quote inside a field, text after a closing quote) PostgreSQL's way."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from importd.imports.copy import cells

RAW = st.text(st.sampled_from(list('ab,;"é \r\n')), max_size=12).map(lambda t: t.encode())


@settings(max_examples=1000)
@given(body=RAW, delimiter=st.sampled_from([b",", b";"]))
def test_pg_fields_agrees_with_split_wherever_split_answers(body: bytes, delimiter: bytes) -> None:
    raw = cells.split(body, delimiter)
    if raw is not None:
        assert cells.pg_fields(body, delimiter) == [(cells.unquote(f), f.startswith(b'"')) for f in raw]


def test_quotes_in_the_middle_of_a_field_and_text_after_a_closing_quote_are_read_as_copy_reads_them() -> None:
    assert cells.pg_fields(b'"x" ,a"b,c"d,e', b",") == [(b"x ", True), (b"ab,cd", True), (b"e", False)]
    assert cells.pg_fields(b'1,"",,""""', b",") == [(b"1", False), (b"", True), (b"", False), (b'"', True)]
    assert cells.pg_fields(b'1,"open', b",") is None
