"""Record boundaries found by quote parity agree with a real CSV writer's records."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from importd.imports.copy import scan
from tests.support.headers import DELIMITERS, ENCODINGS, FIRST_LINES, KNOWN_BAD

FIELD = st.text(alphabet=st.sampled_from(list('ab,"\n\r é;')), max_size=8)
ROWS = st.lists(st.lists(FIELD, min_size=1, max_size=4), min_size=1, max_size=12)


def serialize(rows: list[list[str]], eol: str) -> tuple[bytes, list[int]]:
    """CSV bytes and the end offset of each record."""
    out, ends, size = [], [], 0
    for row in rows:
        buf = io.StringIO()
        csv.writer(buf, lineterminator=eol, quoting=csv.QUOTE_MINIMAL).writerow(row)
        data = buf.getvalue().encode()
        out.append(data)
        size += len(data)
        ends.append(size)
    return b"".join(out), ends


@given(rows=ROWS, eol=st.sampled_from(["\n", "\r\n"]))
def test_record_ends_match_the_records_a_csv_writer_wrote(rows, eol):
    data, ends = serialize(rows, eol)
    assert scan.record_ends(data) == ends
    assert scan.first_record_end(data) == ends[0]
    assert scan.last_record_end(data) == ends[-1]


@given(rows=ROWS, cut=st.integers(min_value=0, max_value=400))
def test_last_record_end_before_any_cut_is_a_record_boundary(rows, cut):
    data, ends = serialize(rows, "\n")
    cut = min(cut, len(data))
    found = scan.last_record_end(data, 0, cut)
    before = [e for e in ends if e <= cut]
    assert found == (before[-1] if before else -1)


def test_unclosed_quote_runs_to_the_end():
    data = b'1,"open\n2,b\n'
    assert scan.record_ends(data) == [len(data)]
    assert scan.last_record_end(data) == -1


def test_long_runs_are_found_at_any_alignment():
    for pad in range(0, 40, 7):
        line = b"x" * 33
        data = b"a\n" * pad + line + b"\nb\n"
        assert scan.has_long_run(data, 32)
        assert not scan.has_long_run(data, 33)
        assert not scan.has_long_run(b"a,b\n" * 100, 8, b"\n,")


@pytest.mark.parametrize(("data", "marker"), [
    (b"\\.\n1,2\n", True), (b"1,2\n\\.\n", True), (b"1,2\r\n\\.\r\n", True), (b"1,2\n\\.", True),
    (b"1,\\.\n", False), (b"a\\.b\n", False), (b"1,2\n", False),
])
def test_end_of_data_marker_lines_are_detected(data, marker):
    assert scan.has_end_marker(data) is marker


@pytest.mark.parametrize(("line", "delimiter"), [
    ("id,name,age", ","), ("id;name;age", ";"), ("id\tname", "\t"), ("id|name", "|"), ("single", ","),
    ('"a;b",c,d', ","),
])
def test_delimiter_is_sniffed_from_the_header_outside_quotes(line, delimiter):
    assert scan.sniff_delimiter(line) == delimiter


def test_encodings_map_to_postgresql_names_and_unknown_ones_are_refused():
    assert scan.encoding(None) == scan.Encoding("UTF8", "utf-8")
    assert scan.encoding("Windows-1252").pg == "WIN1252"
    with pytest.raises(ValueError, match="unsupported encoding 'utf-16'"):
        scan.encoding("utf-16")


def test_header_is_parsed_after_a_bom_and_may_span_lines():
    data = b'\xef\xbb\xbfid,"two\nlines",x\r\n1,2,3\r\n'
    header = scan.read_header(io.BytesIO(data), scan.encoding("utf-8"), None, 1024)
    assert header.fields == ["id", "two\nlines", "x"]
    assert (header.data_offset, header.delimiter, header.lines) == (data.index(b"1,2"), ",", 2)
    with pytest.raises(scan.CsvFormatError, match="the file is empty"):
        scan.read_header(io.BytesIO(b"\xef\xbb\xbf"), scan.encoding("utf-8"), None, 1024)
    with pytest.raises(scan.CsvFormatError, match="byte 0xff at byte offset 3"):
        scan.read_header(io.BytesIO(b"id,\xff\n"), scan.encoding("utf-8"), None, 1024)


def test_has_long_record_sees_a_quoted_field_spanning_short_lines():
    short_lines = b'1,"' + b"\n".join([b"a" * 10] * 5) + b'"\n'  # one record of 60 bytes
    assert scan.has_long_record(b"1,x\n" * 10 + short_lines + b"2,y\n", 40)
    assert not scan.has_long_record(b"1,x\n" * 10 + short_lines + b"2,y\n", 60)
    assert not scan.has_long_record(b'1,"a\nb"\n' * 1000, 16)
    assert scan.has_long_record(b"1,x\n" + b"z" * 50, 40)  # an unterminated last record


@pytest.mark.parametrize("line", KNOWN_BAD, ids=range(len(KNOWN_BAD)))
def test_a_header_the_csv_parser_cannot_read_raises_csv_format_error_naming_it(line):
    """Issue 12 item 6: every parser failure of the header is the typed CsvFormatError (the
    file's fault), never csv.Error / UnicodeDecodeError, which callers took for a server fault."""
    with pytest.raises(scan.CsvFormatError) as caught:
        scan.read_header(io.BytesIO(line + b"\n1,2\n"), scan.encoding(None), None, 4 * 1024 * 1024)
    assert str(caught.value)


@settings(max_examples=500)
@given(line=FIRST_LINES, enc=ENCODINGS, delimiter=DELIMITERS, max_line=st.sampled_from([8, 64, 4 * 1024 * 1024]))
@example(line=b'"a"b,c', enc=None, delimiter=None, max_line=4 * 1024 * 1024)
@example(line=b'"id,name', enc=None, delimiter=None, max_line=4 * 1024 * 1024)
def test_read_header_of_any_first_line_returns_a_header_or_raises_only_csv_format_error(
        line, enc, delimiter, max_line):
    """Issue 12 item 6, at the depth of the mechanism: whatever the first line's bytes,
    encoding, delimiter and line limit, the header reader's only failure is CsvFormatError."""
    try:
        header = scan.read_header(io.BytesIO(line + b"\n1,2\n"), scan.encoding(enc), delimiter, max_line)
    except scan.CsvFormatError:
        return
    assert isinstance(header.fields, list) and header.data_offset > 0


@pytest.mark.parametrize(("data", "eol"), [
    (b"a,b\n1,2\r\n", b"\n"), (b"a,b\r\n1,2\n", b"\r\n"), (b"a,b\r1,2\r\n", b"\r"), (b'"a\r\n",b\r1\n', b"\r"),
    (b'"a\n"\r\nx', b"\r\n"), (b"a,b", b"\n"),
])
def test_the_line_end_is_decided_at_the_first_cr_or_lf_outside_quotes(data, eol):
    """issue 12 item 11: as PostgreSQL's CopyReadLineText decides it, for the whole file."""
    assert scan.line_end(data) == eol


@pytest.mark.parametrize(("data", "eol", "faults"), [
    (b"1,2\n3,4\r\n5,6\n", b"\n", [(4, 9, scan.UNQUOTED_CR)]),
    (b'1,"\r"\n3\r4\n', b"\n", [(6, 10, scan.UNQUOTED_CR)]),
    (b"1,2\r\n3,4\n5,6\r\n", b"\r\n", [(5, 9, scan.UNQUOTED_NL)]),
    (b'1,"a\nb"\r\n3,4\r5\r\n', b"\r\n", [(9, 16, scan.UNQUOTED_CR)]),
    (b"1,2\r\n", b"\r\n", []), (b"1,2\r", b"\r\n", [(0, 4, scan.UNQUOTED_CR)]),
    (b'1,2\r3,"\n"\r\n4\r', b"\r", [(10, 13, scan.UNQUOTED_NL)]),
])
def test_records_with_a_line_end_of_another_style_outside_quotes_are_faults(data, eol, faults):
    assert scan.eol_faults(data, eol) == faults


def test_a_bare_cr_header_is_read_and_its_line_end_kept():
    header = scan.read_header(io.BytesIO(b'id,"x\ny"\r1,2\r'), scan.encoding("utf-8"), None, 1024)
    assert (header.fields, header.eol, header.data_offset, header.lines) == (["id", "x\ny"], b"\r", 9, 1)


@settings(max_examples=300)
@given(text=st.text(st.characters(min_codepoint=1, max_codepoint=0x2FFF), min_size=8, max_size=300))
def test_text_in_an_ascii_compatible_encoding_is_never_taken_for_utf16_or_utf32(text: str) -> None:
    for encoding in ("utf-8", "utf-8-sig"):
        assert scan.wide_encoding(text.encode(encoding)) is None


@settings(max_examples=100)
@given(line=st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=4, max_size=100),
       encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]))
def test_a_header_in_utf16_or_utf32_is_recognised_with_or_without_a_byte_order_mark(line: str, encoding: str) -> None:
    data = (line + "\r\n").encode(encoding)
    assert scan.wide_encoding(data) == encoding[:6].upper()
    with pytest.raises(scan.CsvFormatError, match=encoding[:6].upper()):
        scan.read_header(io.BytesIO(data), scan.encoding("latin1"), None, 1024)
