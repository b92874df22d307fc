"""The upload store's interface (:class:`Store`), what it hands back, its errors and sizes.

A job names an object by its *key* (``<job_id>.csv``), size and sha256, never by a host path,
so an API and workers that share no directory agree on it. The backends are
:mod:`.file` and :mod:`.s3`; :mod:`.choose` picks one from the settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from importd.errors import PermanentError, TransientError

#: Bytes read from a source per write loop, and the read buffer of an object reader.
CHUNK_BYTES = 1024 * 1024
#: Bytes of one S3 multipart part (S3's minimum is 5 MiB but for the last): memory per upload.
#: 10,000 parts (S3's maximum) of 8 MiB hold 78 GiB, far past ``max_upload_bytes`` (10 GiB).
PART_BYTES = 8 * 1024 * 1024
#: Seconds a presigned part URL stays valid.
PRESIGN_EXPIRES_S = 3600


def composite_sha256(part_digests: list[str]) -> str:
    """The sha256 (hex) of the parts' binary sha256 digests concatenated in order: one short
    value that proves every part (S3 calls this shape a composite checksum)."""
    return hashlib.sha256(b"".join(bytes.fromhex(d) for d in part_digests)).hexdigest()


class StorageError(TransientError):
    """The store failed (unreachable, 5xx, a read broke past its retries): may pass."""


class ObjectNotFound(PermanentError):
    """No object under that key."""


class BadKey(PermanentError):
    """A key (or legacy path) that names nothing inside the store."""


@dataclass(frozen=True)
class StoredObject:
    """What a job message carries about its file: the key, its size and sha256 (hex)."""

    key: str
    size: int
    sha256: str

    @property
    def checksum(self) -> str:
        return f"sha256:{self.sha256}"

    def as_args(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str


class Store:
    """The operations importd needs from an upload store; see the backends."""

    url: str

    def write(self, key: str, stream: BinaryIO) -> StoredObject:
        """Store everything ``stream`` gives under ``key``, hashing as it goes; on any error
        (including one ``stream.read`` raises) nothing is left and the error propagates."""
        raise NotImplementedError

    def write_file(self, key: str, path: Path) -> StoredObject:
        """Store a local file (opened here, so a read error is the caller's OSError)."""
        with path.open("rb") as f:
            return self.write(key, f)

    def adopt(self, key: str, path: Path) -> StoredObject:
        """Store a local file this process spooled, which is gone afterwards (moved or copied)."""
        try:
            return self.write_file(key, path)
        finally:
            path.unlink(missing_ok=True)

    def open(self, key: str, offset: int = 0, size: int | None = None) -> BinaryIO:
        """A seekable binary reader of the object positioned at ``offset``; ``size``, when the
        caller knows it already (a job's :class:`Source`), saves asking the store again."""
        raise NotImplementedError

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Exactly the bytes ``[offset, offset + length)`` (fewer at the object's end), and no
        more read from the store: a resumed job reads its header this way (S3: one bounded
        ranged GET), where a reader would fill a whole buffer from offset 0."""
        with self.open(key, offset) as f:
            out = bytearray()
            while len(out) < length:
                chunk = f.read(length - len(out))
                if not chunk:
                    break
                out += chunk
        return bytes(out)

    def size(self, key: str) -> int:
        """The object's size; ObjectNotFound if there is none."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def checksum(self, key: str) -> StoredObject:
        """Size and sha256 of the stored bytes (read whole, streamed)."""
        return self.part_checksums(key, 0)[0]

    def part_checksums(self, key: str, part_bytes: int) -> tuple[StoredObject, list[str]]:
        """Size and sha256 of the stored bytes and, in the same streamed read, the sha256 (hex)
        of each ``part_bytes`` slice in order, the last one shorter (none when ``part_bytes``
        is 0). A browser can hash a part natively but not a large file whole (``crypto.subtle``
        has no incremental digest): the presigned upload's ``composite_sha256`` is built on these."""
        whole, size = hashlib.sha256(), 0
        parts: list[str] = []
        part, filled = hashlib.sha256(), 0
        with self.open(key) as f:
            while chunk := f.read(CHUNK_BYTES):
                size += len(chunk)
                whole.update(chunk)
                view = memoryview(chunk)
                while part_bytes and view:
                    take = min(len(view), part_bytes - filled)
                    part.update(view[:take])
                    filled, view = filled + take, view[take:]
                    if filled == part_bytes:
                        parts.append(part.hexdigest())
                        part, filled = hashlib.sha256(), 0
        if filled:
            parts.append(part.hexdigest())
        return StoredObject(key, size, whole.hexdigest()), parts

    def delete(self, key: str) -> None:
        """Remove the object (no error if it is already gone)."""
        raise NotImplementedError

    def keys(self, under: str = "") -> list[str]:
        """Every key in the store that starts with ``under`` (a folder such as ``rejects/JOB/``;
        empty: all of them, for tests and operators, not for large stores)."""
        raise NotImplementedError

    # Presigned multipart: only object stores have it.
    def create_multipart(self, key: str) -> str:
        raise NotImplementedError(f"{self.url} has no presigned uploads")

    def part_urls(self, key: str, upload_id: str, numbers: list[int],
                  expires_s: int = PRESIGN_EXPIRES_S) -> dict[int, str]:
        raise NotImplementedError(f"{self.url} has no presigned uploads")

    def list_parts(self, key: str, upload_id: str) -> list[Part]:
        raise NotImplementedError(f"{self.url} has no presigned uploads")

    def complete_multipart(self, key: str, upload_id: str, parts: list[Part]) -> None:
        raise NotImplementedError(f"{self.url} has no presigned uploads")

    def abort_multipart(self, key: str, upload_id: str) -> None:
        raise NotImplementedError(f"{self.url} has no presigned uploads")

    def open_multiparts(self) -> list[tuple[str, str]]:
        """(key, upload id) of every multipart upload not completed nor aborted."""
        return []

    def presign_origin(self) -> str | None:
        """``scheme://host[:port]`` that presigned part URLs point at (a browser PUTs there, so
        the page's Content-Security-Policy must allow it); None: no presigned uploads."""
        return None
