"""Finding CSV record boundaries in raw bytes, at C speed, the way PostgreSQL does.

PostgreSQL's CSV reader (``CopyReadLineText``) toggles "inside quotes" at every quote byte
and ends a record at a newline seen outside quotes; a doubled quote inside a quoted field
toggles twice. So a newline ends a record exactly where the number of quote bytes since the
start of the record is even. :func:`last_record_end` and :func:`record_ends` use that rule
with ``bytes.count``/``find`` only: no Python work per field, and on the clean path none per
record either. It holds for UTF-8 and for the other ASCII-compatible encodings PostgreSQL
accepts as client encodings (in SJIS, BIG5, GBK ... no trail byte is ``"`` or ``\\n``).

The newline is the file's line end, decided once at the header as PostgreSQL decides it at
the first line (:func:`line_end`: LF, CRLF or bare CR; CR is then the byte that ends a
record, :func:`line_break`). PostgreSQL fails a COPY at a CR or LF of another style outside
quotes; every importd batch being its own COPY, :func:`eol_faults` finds those records so
that they are rejected rows, whichever batch they fall in.

The header (the first record only) is parsed with Python's csv module; the delimiter comes
from the job's options or is sniffed from the header line.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from typing import BinaryIO

QUOTE = b'"'
NL = b"\n"
CR = b"\r"
CRLF = b"\r\n"
BOM_UTF8 = codecs.BOM_UTF8
#: Delimiters the sniffer chooses from, most likely first on a tie.
SNIFF_DELIMITERS = (",", ";", "\t", "|")

#: Encoding names accepted in a job's options (lower case, without ``-``/``_``) ->
#: (PostgreSQL client encoding, Python codec). Only ASCII-compatible encodings: the record
#: scanner relies on ``"`` and ``\n`` never being part of a multi-byte character.
ENCODINGS: dict[str, tuple[str, str]] = {
    "utf8": ("UTF8", "utf-8"), "latin1": ("LATIN1", "latin-1"), "iso88591": ("LATIN1", "latin-1"),
    "latin9": ("LATIN9", "iso8859-15"), "iso885915": ("LATIN9", "iso8859-15"),
    "latin2": ("LATIN2", "iso8859-2"), "iso88592": ("LATIN2", "iso8859-2"),
    "cp1252": ("WIN1252", "cp1252"), "win1252": ("WIN1252", "cp1252"), "windows1252": ("WIN1252", "cp1252"),
    "cp1251": ("WIN1251", "cp1251"), "win1251": ("WIN1251", "cp1251"), "windows1251": ("WIN1251", "cp1251"),
    "cp1250": ("WIN1250", "cp1250"), "win1250": ("WIN1250", "cp1250"), "windows1250": ("WIN1250", "cp1250"),
    "koi8r": ("KOI8R", "koi8-r"), "sjis": ("SJIS", "shift_jis"), "shiftjis": ("SJIS", "shift_jis"),
    "eucjp": ("EUC_JP", "euc_jp"), "gbk": ("GBK", "gbk"), "big5": ("BIG5", "big5"),
    "euckr": ("EUC_KR", "euc_kr"), "ascii": ("SQL_ASCII", "ascii"),
}


#: Byte order marks of Unicode encodings that are not ASCII-compatible (UTF-32 first: its LE
#: mark begins with UTF-16's). PostgreSQL cannot take them as a client encoding.
WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
             (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
SAVE_AS_UTF8 = "importd reads UTF-8 and single-byte encodings: save the file as CSV UTF-8"


def wide_encoding(head: bytes) -> str | None:
    """"UTF-16"/"UTF-32" when ``head`` (a file's first bytes) is text in one of them: its byte
    order mark, or (no mark) a NUL byte in every other or every fourth position of its first
    line, as ASCII text in those encodings has; None otherwise."""
    for bom, name in WIDE_BOMS:
        if head.startswith(bom):
            return name
    sample = head[:256]
    if len(sample) < 8:
        return None
    for name, width in (("UTF-32", 4), ("UTF-16", 2)):
        nuls = [sample[i::width].count(0) * 10 / len(sample[i::width]) for i in range(width)]
        if sorted(nuls)[0] <= 1 and sorted(nuls)[1] >= 9 and len([n for n in nuls if n >= 9]) == width - 1:
            return name  # one lane of text (hardly a NUL), every other lane NULs
    return None


class CsvFormatError(ValueError):
    """The file cannot be read as CSV at all (no header, unclosed quote running away, ...)."""


@dataclass(frozen=True)
class Encoding:
    pg: str
    python: str

    @property
    def is_utf8(self) -> bool:
        return self.pg == "UTF8"


def encoding(name: str | None) -> Encoding:
    """The encoding named in a job's options (default UTF-8); ValueError if unsupported."""
    key = (name or "utf-8").lower().replace("-", "").replace("_", "")
    if key not in ENCODINGS:
        raise ValueError(f"unsupported encoding {name!r} (supported: utf-8, latin1, cp1252, ...)")
    return Encoding(*ENCODINGS[key])


def last_record_end(buf: bytes, start: int = 0, end: int | None = None, brk: bytes = NL) -> int:
    """Offset just after the last newline in ``buf[start:end]`` that ends a record, or -1.

    ``start`` must be the start of a record; ``brk`` is the byte that ends a line (see
    :func:`line_break`).
    """
    end = len(buf) if end is None else end
    pos = buf.rfind(brk, start, end)
    if pos < 0:
        return -1
    quotes = buf.count(QUOTE, start, pos)
    while quotes & 1:
        prev = buf.rfind(brk, start, pos)
        if prev < 0:
            return -1
        quotes -= buf.count(QUOTE, prev, pos)
        pos = prev
    return pos + 1


def first_record_end(buf: bytes, start: int = 0, end: int | None = None, brk: bytes = NL) -> int:
    """End offset of the record starting at ``start`` (``end`` if it does not end in ``buf``)."""
    end = len(buf) if end is None else end
    nl = buf.find(brk, start, end)
    if nl < 0:
        return end
    quotes = buf.count(QUOTE, start, nl)
    while quotes & 1:
        nxt = buf.find(brk, nl + 1, end)
        if nxt < 0:
            return end
        quotes += buf.count(QUOTE, nl, nxt)
        nl = nxt
    return nl + 1


def record_ends(buf: bytes, start: int = 0, end: int | None = None, brk: bytes = NL) -> list[int]:
    """End offsets (after the newline) of every record in ``buf[start:end]``; the last record
    may end without a newline (or inside an unclosed quote) at ``end``."""
    end = len(buf) if end is None else end
    ends: list[int] = []
    pos = start
    while pos < end:
        nl = buf.find(brk, pos, end)
        if nl < 0:
            ends.append(end)
            break
        quotes = buf.count(QUOTE, pos, nl)
        while quotes & 1:
            nxt = buf.find(brk, nl + 1, end)
            if nxt < 0:
                nl = end - 1
                break
            quotes += buf.count(QUOTE, nl, nxt)
            nl = nxt
        ends.append(nl + 1)
        pos = nl + 1
    return ends


def has_long_run(buf: bytes, limit: int, stops: bytes = NL) -> bool:
    """True if ``buf`` may hold more than ``limit`` bytes in a row without a byte of ``stops``.

    Looks at aligned blocks of ``limit // 2 + 1`` bytes (a run longer than ``limit`` covers
    one whole block), so it costs a few C-level finds per batch; a block with no stop byte
    is measured exactly.
    """
    size = len(buf)
    block = limit // 2 + 1
    for begin in range(0, size - block + 1, block):
        if any(buf.find(bytes([s]), begin, begin + block) >= 0 for s in stops):
            continue
        left = max(buf.rfind(bytes([s]), 0, begin) for s in stops) + 1
        rights = [r for r in (buf.find(bytes([s]), begin + block) for s in stops) if r >= 0]
        right = min(rights) if rights else size
        if right - left > limit:
            return True
    return False


def has_long_record(buf: bytes, limit: int, brk: bytes = NL) -> bool:
    """True if a record of ``buf`` (whole records) may be longer than ``limit`` bytes.

    Catches what :func:`has_long_run` cannot: a quoted field spanning several lines, each
    shorter than the limit. Hops from record end to record end at most ``limit`` bytes apart
    (quote parity, a few C-level scans per hop), so it costs about one pass over ``buf``.
    """
    start, size = 0, len(buf)
    while size - start > limit:
        end = last_record_end(buf, start, start + limit + 1, brk)
        if end <= start:
            return True
        start = end
    return False


def has_end_marker(buf: bytes, eol: bytes = NL) -> bool:
    """True if a line of ``buf`` is ``\\.``: PostgreSQL's end-of-data marker, which would end
    COPY early and drop the rows after it (``eol``: the file's line end, see :func:`line_end`)."""
    if buf.find(b"\\") < 0 or b"\\." not in buf:  # memchr first: most files have no backslash
        return False
    if eol == CR:
        return buf.startswith(b"\\.\r") or buf == b"\\." or b"\r\\.\r" in buf or buf.endswith(b"\r\\.")
    return (buf.startswith((b"\\.\n", b"\\.\r\n")) or buf in (b"\\.", b"\\.\r") or b"\n\\.\n" in buf
            or b"\n\\.\r\n" in buf or buf.endswith((b"\n\\.", b"\n\\.\r")))


def line_end(buf: bytes, start: int = 0, end: int | None = None) -> bytes:
    """The line end of a file (:data:`NL`, :data:`CRLF` or :data:`CR`) as PostgreSQL's CSV
    reader decides it: at the first CR or LF outside quotes, from ``start`` (the header's
    start), CR then LF being CRLF. LF when there is none (a header-only file)."""
    end = len(buf) if end is None else end
    pos = start
    while True:
        hits = [p for p in (buf.find(CR, pos, end), buf.find(NL, pos, end)) if p >= 0]
        if not hits:
            return NL
        pos = min(hits)
        if not buf.count(QUOTE, start, pos) & 1:
            if buf[pos:pos + 1] == NL:
                return NL
            return CRLF if buf[pos + 1:pos + 2] == NL else CR
        pos += 1


def line_break(eol: bytes) -> bytes:
    """The byte that ends a record in a file with line end ``eol``: CR in a bare-CR file,
    else LF (a CRLF record ends with its LF)."""
    return CR if eol == CR else NL


#: PostgreSQL's errors for a line end of another style than the file's (22P04, bad copy file format).
UNQUOTED_CR = "unquoted carriage return found in data"
UNQUOTED_NL = "unquoted newline found in data"


def eol_faults(buf: bytes, eol: bytes) -> list[tuple[int, int, str]]:
    """(start, end, reason) of the records of ``buf`` (whole records) that hold a CR or LF
    outside quotes other than the file's line end ``eol``: PostgreSQL fixes the style at the
    file's first line and fails the COPY at any other, but a batch sent alone would be read
    in the style of its own first record. Three C-level counts or one find when the batch is
    clean; the records are only walked when it is not."""
    if eol == NL:
        if buf.find(CR) < 0:
            return []
        foreign = _positions(buf, CR)
    elif eol == CR:
        if buf.find(NL) < 0:
            return []
        foreign = _positions(buf, NL)
    else:
        pairs = buf.count(CRLF)
        if buf.count(CR) == pairs == buf.count(NL):
            return []
        foreign = [p for p in _positions(buf, CR) if buf[p + 1:p + 2] != NL]
        foreign += [p for p in _positions(buf, NL) if p == 0 or buf[p - 1:p] != CR]
        foreign.sort()
    return _faulty_records(buf, foreign, line_break(eol))


def _positions(buf: bytes, byte: bytes) -> list[int]:
    out, pos = [], buf.find(byte)
    while pos >= 0:
        out.append(pos)
        pos = buf.find(byte, pos + 1)
    return out


def _faulty_records(buf: bytes, foreign: list[int], brk: bytes) -> list[tuple[int, int, str]]:
    """The records holding one of the ``foreign`` line-end bytes outside quotes."""
    faults: list[tuple[int, int, str]] = []
    ends = record_ends(buf, brk=brk)
    index = 0
    start = 0
    for pos in foreign:
        while ends[index] <= pos:
            start = ends[index]
            index += 1
        if faults and faults[-1][0] == start:
            continue
        if not buf.count(QUOTE, start, pos) & 1:
            faults.append((start, ends[index], UNQUOTED_CR if buf[pos:pos + 1] == CR else UNQUOTED_NL))
    return faults


def strip_eol(record: bytes) -> bytes:
    if record.endswith(b"\r\n"):
        return record[:-2]
    return record[:-1] if record.endswith((b"\n", b"\r")) else record


@dataclass(frozen=True)
class Header:
    """The first record of a file: its fields, where the data starts, and the dialect."""

    fields: list[str]
    data_offset: int
    delimiter: str
    lines: int  # physical lines the header spans (usually 1)
    eol: bytes = NL  # the file's line end, decided here as PostgreSQL does (see line_end)


def read_header(f: BinaryIO, enc: Encoding, delimiter: str | None, max_line_bytes: int) -> Header:
    """Parse the header record of ``f`` (positioned at 0).

    Every way the bytes can fail to be a header raises :class:`CsvFormatError` (the file's
    fault: a job outcome, HTTP 422), never a parser's own exception type, which callers
    would take for a fault of the server: csv.Error (a quote inside a field, an unclosed
    quote, a field past the csv module's size limit), codec errors, a bad delimiter.
    """
    try:
        return _read_header(f, enc, delimiter, max_line_bytes)
    except CsvFormatError:
        raise
    except csv.Error as exc:
        raise CsvFormatError(f"the header line is not valid CSV: {exc}") from exc
    except (UnicodeError, LookupError) as exc:
        raise CsvFormatError(f"the header cannot be decoded as {enc.pg}: {exc}") from exc
    except ValueError as exc:
        raise CsvFormatError(f"the header line cannot be read: {exc}") from exc


def _read_header(f: BinaryIO, enc: Encoding, delimiter: str | None, max_line_bytes: int) -> Header:
    head = f.read(max_line_bytes + len(BOM_UTF8) + 2)
    wide = wide_encoding(head)
    if wide:
        raise CsvFormatError(f"the file is {wide} text; {SAVE_AS_UTF8}")
    skip = len(BOM_UTF8) if enc.is_utf8 and head.startswith(BOM_UTF8) else 0
    if len(head) <= skip:
        raise CsvFormatError("the file is empty: no header line")
    eol = line_end(head, skip)
    brk = line_break(eol)
    end = first_record_end(head, skip, min(len(head), skip + max_line_bytes + 1), brk)
    if end - skip > max_line_bytes and not head[skip:end].endswith(brk):
        raise CsvFormatError(f"the header line is longer than {max_line_bytes} bytes")
    raw = head[skip:end]
    try:
        text = strip_eol(raw).decode(enc.python)
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"the header is not valid {enc.pg}: byte 0x{raw[exc.start]:02x} "
                             f"at byte offset {skip + exc.start}") from exc
    if "\x00" in text:
        raise CsvFormatError(f"the header contains a NUL byte at byte offset {skip + raw.index(0)}")
    if not text.strip():
        raise CsvFormatError("the header line is empty")
    delim = delimiter or sniff_delimiter(text)
    if len(delim) != 1 or delim in '"\r\n' or ord(delim) > 127:
        raise CsvFormatError(f"bad delimiter {delim!r}: one ASCII character other than a quote or newline")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delim, strict=True))
    fields = rows[0] if rows else []
    return Header(fields=fields, data_offset=end, delimiter=delim, lines=raw.count(brk) or 1, eol=eol)


def sniff_delimiter(header_line: str) -> str:
    """The candidate delimiter seen most often in the header line outside quotes (``,`` if none)."""
    outside = "".join(part for i, part in enumerate(header_line.split('"')) if i % 2 == 0)
    counts = {d: outside.count(d) for d in SNIFF_DELIMITERS}
    best = max(SNIFF_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","
