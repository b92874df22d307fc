"""Which bytes of an object a run reads from the upload store: counting wrappers around the real
store object (no mock: every byte still comes from the real directory or S3 server).

:func:`count_reads` wraps the store that ``storage.from_settings(settings)`` hands the run: for
S3 its boto3 client's ``get_object`` (each response body counted as it is read, from the start
of its Range), for a directory its ``open`` (each ``read`` counted at the file's position). The
result is the list of (start, end) byte ranges read from one key, in order.
"""

from __future__ import annotations

from typing import Any

import pytest

from importd.config import Settings
from importd.imports import storage

Ranges = list[tuple[int, int]]


class _CountedBody:
    """A ``get_object`` body that records the ranges read from it."""

    def __init__(self, body: Any, start: int, ranges: Ranges) -> None:
        self.body, self.pos, self.ranges = body, start, ranges

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self.body.read(*args, **kwargs)
        if data:
            self.ranges.append((self.pos, self.pos + len(data)))
            self.pos += len(data)
        return data

    def close(self) -> None:
        self.body.close()


class _CountingClient:
    """A boto3 S3 client whose ``get_object`` of ``name`` is counted; everything else passes."""

    def __init__(self, client: Any, name: str, ranges: Ranges) -> None:
        self.client, self.name, self.ranges = client, name, ranges

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.client, attr)

    def get_object(self, **kwargs: Any) -> Any:
        got = self.client.get_object(**kwargs)
        if kwargs.get("Key") == self.name:
            start = int(str(kwargs.get("Range", "bytes=0-")).split("=")[1].split("-")[0])
            got["Body"] = _CountedBody(got["Body"], start, self.ranges)
        return got


class _CountedFile:
    """A file of a directory store whose reads are recorded at their position."""

    def __init__(self, f: Any, ranges: Ranges) -> None:
        self.f, self.ranges = f, ranges

    def read(self, n: int = -1) -> bytes:
        pos = self.f.tell()
        data: bytes = self.f.read(n)
        if data:
            self.ranges.append((pos, pos + len(data)))
        return data

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.f, attr)

    def __enter__(self) -> _CountedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def count_reads(settings: Settings, key: str, monkeypatch: pytest.MonkeyPatch) -> Ranges:
    """From now on (until the test ends), record the byte ranges read from ``key`` through
    the store of ``settings``; the list fills as the run reads."""
    found = storage.from_settings(settings)
    ranges: Ranges = []
    if isinstance(found, storage.S3Store):
        monkeypatch.setattr(found, "client", _CountingClient(found.client, found.name(key), ranges))
    else:
        real = found.open

        def counted_open(k: str, offset: int = 0, size: int | None = None) -> Any:
            f = real(k, offset, size)
            return _CountedFile(f, ranges) if k == key else f

        monkeypatch.setattr(found, "open", counted_open)
    return ranges


def overlap(ranges: Ranges, start: int, end: int) -> int:
    """Bytes of ``[start, end)`` that the recorded reads cover (each byte once)."""
    covered = sorted((max(a, start), min(b, end)) for a, b in ranges if a < end and b > start)
    total, reach = 0, start
    for a, b in covered:
        a = max(a, reach)
        if b > a:
            total += b - a
            reach = b
    return total
