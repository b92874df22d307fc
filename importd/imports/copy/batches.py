"""Reading a CSV file as record-aligned batches of raw bytes, one batch ahead in a thread.

A batch ends just after the last record that ends inside it (:func:`importd.imports.copy.scan.
last_record_end`), so every batch is whole records and can go to COPY as it is. Records are
cut at the file's line end (LF, CRLF or bare CR, decided once at the header as PostgreSQL
does): a batch is its own COPY, which would decide the style again at the batch's first
record, so the records whose line end is of another style are found here
(:func:`importd.imports.copy.scan.eol_faults`) for the loader to reject. Reading,
cutting and the cheap checks run in a read-ahead thread: they overlap the COPY of the
previous batch (the thread holds the GIL only for C-level byte scans).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from importd.imports.copy import scan
from importd.imports.copy.scan import NL

if TYPE_CHECKING:
    from importd.imports.copy.spec import LoadOptions

#: Batches read ahead of the one being sent to COPY.
PREFETCH = 1

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    offset: int  # file offset of the first byte
    line: int  # physical line number of the first record
    data: bytes
    suspicious: bool = False  # may hold what COPY would not catch (limits, end marker)
    brk: bytes = NL  # the byte that ends a line (CR in a bare-CR file)
    #: (start, end, reason) in ``data`` of the records whose line end differs from the file's.
    faults: tuple[tuple[int, int, str], ...] = ()

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    @property
    def next_line(self) -> int:
        return self.line + self.data.count(self.brk)

    def part(self, start: int, stop: int) -> Batch:
        """The records ``data[start:stop]`` as a batch of their own (no faults)."""
        return Batch(self.offset + start, self.line + self.data.count(self.brk, 0, start), self.data[start:stop],
                     self.suspicious, self.brk)


def batches(f: BinaryIO, offset: int, line: int, opts: LoadOptions) -> Generator[Batch, None, None]:
    """Record-aligned batches from ``offset`` (a record start at physical line ``line``),
    read one batch ahead in a thread so that reading and scanning overlap the COPY.

    Memory stays within a few ``batch_bytes + max_line_bytes``: a record that does not end
    within ``max_line_bytes`` after a batch's start (an unclosed quote) raises CsvFormatError.
    A file that fits in one batch is read here: starting a thread would cost more than it
    hides (small files are most of a busy worker's jobs).
    """
    if f.seek(0, os.SEEK_END) - offset <= opts.batch_bytes:  # any seekable stream (a file, an object)
        return _inline(_batches(f, offset, line, opts))
    return prefetch(_batches(f, offset, line, opts))


def _inline(items: Iterator[T]) -> Generator[T, None, None]:
    yield from items


def _batches(f: BinaryIO, offset: int, line: int, opts: LoadOptions) -> Iterator[Batch]:
    f.seek(offset)
    buf = b""
    while True:
        chunk = f.read(opts.batch_bytes)
        if not chunk:
            if buf:
                yield _batch(offset, line, buf, opts)
            return
        buf = buf + chunk if buf else chunk
        cut = scan.last_record_end(buf, brk=opts.brk)
        if cut <= 0:
            if len(buf) > opts.max_line_bytes + opts.batch_bytes:
                raise scan.CsvFormatError(
                    f"line {line}: a quoted field is not closed within {opts.max_line_bytes} bytes"
                    f" (byte offset {offset}); the rest of the file cannot be read")
            continue
        data = buf[:cut] if cut < len(buf) else buf
        batch = _batch(offset, line, data, opts)
        buf = buf[cut:]
        yield batch
        offset, line = batch.end, batch.next_line


def _batch(offset: int, line: int, data: bytes, opts: LoadOptions) -> Batch:
    return Batch(offset, line, data, _suspicious(data, opts), opts.brk, tuple(scan.eol_faults(data, opts.eol)))


def _suspicious(data: bytes, opts: LoadOptions) -> bool:
    """Cheap C-level checks for what COPY would not catch (limits, end marker)."""
    return (scan.has_end_marker(data, opts.eol)
            or scan.has_long_run(data, opts.max_field_bytes, opts.brk + opts.delimiter.encode())
            or scan.has_long_record(data, opts.max_field_bytes, opts.brk))


def prefetch(items: Iterator[T], depth: int = PREFETCH) -> Generator[T, None, None]:
    """Iterate ``items`` in a thread, ``depth`` items ahead; errors are re-raised here.

    The producer stops (and is joined) when the consumer stops early, before the caller
    closes what the producer reads.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put("item", item):
                    return
            put("end", None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put("error", exc)

    thread = threading.Thread(target=produce, name="importd-read", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
