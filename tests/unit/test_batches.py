"""Batches: whole records, read one batch ahead in a thread unless the file is one batch."""

from __future__ import annotations

import threading
from pathlib import Path

from importd.imports.copy.batches import batches
from importd.imports.copy.loader import LoadOptions
from importd.imports.copy.scan import encoding


def reader_threads() -> int:
    return sum(t.name == "importd-read" for t in threading.enumerate())


def test_a_file_of_one_batch_is_read_without_a_thread_and_a_larger_one_ahead_in_one(tmp_path: Path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"".join(b'%d,"two\nlines"\n' % i for i in range(1000)))
    for batch_bytes, threads in ((1 << 20, 0), (1000, 1)):
        opts = LoadOptions(delimiter=",", encoding=encoding(None), batch_bytes=batch_bytes)
        with path.open("rb") as f:
            got = batches(f, 0, 1, opts)
            first = next(got)
            assert reader_threads() == threads
            rest = list(got)
        assert b"".join(b.data for b in [first, *rest]) == path.read_bytes()
        assert all(b.data.endswith(b'lines"\n') for b in [first, *rest])
    assert reader_threads() == 0
