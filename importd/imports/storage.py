"""Where uploads live: one interface (:class:`Store`), two backends, chosen by ``IMPORTD_STORAGE_URL``.

- ``file:///var/lib/importd/uploads`` (:class:`FileStore`, the default, one host): objects are
  files under one directory; a key must resolve inside it (a symlink or ``..`` out of it is
  refused), as job paths always had to.
- ``s3://BUCKET/PREFIX`` (:class:`S3Store`): any S3-compatible store (AWS S3, MinIO, Ceph RGW);
  ``IMPORTD_S3_ENDPOINT_URL`` names a non-AWS endpoint, credentials and region come from the
  standard AWS variables and boto3's credential chain.

A job names an object by its *key* (``<job_id>.csv``), size and sha256, never by a host path, so
an API and workers that share no directory agree on it. Writes stream (S3: a multipart upload
of :data:`PART_BYTES` parts, so memory stays one part whatever the size), hash as they go, and
leave nothing behind when they fail (the partial file is removed, the multipart upload
aborted). Reads are seekable binary streams from any offset (S3: a ranged GET streamed as it
is read); a read that breaks mid-object is reopened at the current offset (tenacity) instead
of failing the job, so committed batches are never read again.

Why boto3 and not obstore: the presigned multipart upload (a client PUTs parts straight to the
store) needs CreateMultipartUpload / UploadPart URLs signed with the upload id and part
number, ListParts (to resend only missing parts), Complete and Abort, and the "nothing left
behind" check needs ListMultipartUploads. boto3 has all of them; obstore 0.12 exposes neither
the multipart ids nor part-URL signing, so it would still need boto3 beside it. boto3 is sync
(our worker and submit are threads, not asyncio) and is the most used S3 client there is.
Measured here (2 cores, a local moto server): a 100 MB ranged read from offset 1 took 0.16 s
through this reader (8 MiB reads) and 0.18 s through obstore's ``get(range).stream()``, i.e.
~600 MB/s either way, far more than COPY takes in (tens of MB/s), so speed does not decide.
What an import waits for is each GET's first byte, the same for any client (moto reads the
whole object for every GET: 0.17 s for a 112 MiB one here, 0.03 s for 1 MiB), so the reader
opens as few as it can: one per new import (:class:`_S3Reader`; docs/benchmarks.md,
"Reading from S3"). ``python -m importd.imports.storage URL ENDPOINT KEY`` re-measures
against another store.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from importd.config import Settings
from importd.errors import PermanentError, TransientError

#: Bytes read from a source per write loop, and the read buffer of an object reader.
CHUNK_BYTES = 1024 * 1024
#: Bytes of one S3 multipart part (S3's minimum is 5 MiB but for the last): memory per upload.
#: 10,000 parts (S3's maximum) of 8 MiB hold 78 GiB, far past ``max_upload_bytes`` (10 GiB).
PART_BYTES = 8 * 1024 * 1024
#: Times a broken read is reopened at its offset before the error reaches the job (transient).
READ_ATTEMPTS = 5
#: Bytes of an object's head an S3 reader keeps while the engine reads it again (the header, up
#: to ``max_line_bytes`` plus a read buffer, then its bytes for the reject file): see _S3Reader.
HEAD_BYTES = 8 * 1024 * 1024
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


# -- file:// -------------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(partial: Path, final: Path) -> None:
    """Rename a file whose data is on disk to its final name, and make the rename durable
    (fsync of the directory): a job is queued only after its file is stored, and a stored
    file must survive a power cut as the queued message does (the broker fsyncs it)."""
    os.replace(partial, final)
    _fsync(final.parent)


class FileStore(Store):
    """Objects as files in one directory: ``<root>/<key>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def path(self, key: str) -> Path:
        """The file of ``key``; BadKey unless it resolves (symlinks followed) inside the root."""
        root = self.root.resolve()
        resolved = (self.root / key).resolve()
        if not key or Path(key).is_absolute() or not resolved.is_relative_to(root) or resolved == root:
            raise BadKey(f"key {key!r} is outside the upload directory")
        return resolved

    def key_of(self, path: str) -> str:
        """The key of an absolute path inside the root (jobs queued before keys existed)."""
        resolved = Path(path).resolve()
        root = self.root.resolve()
        if not resolved.is_relative_to(root) or resolved == root:
            raise BadKey(f"{path!r} is outside the upload directory")
        return str(resolved.relative_to(root))

    def write(self, key: str, stream: BinaryIO) -> StoredObject:
        final = self._final(key)
        partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
        digest, size = hashlib.sha256(), 0
        try:
            with partial.open("wb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    size += len(chunk)
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            _publish(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return StoredObject(key, size, digest.hexdigest())

    def write_file(self, key: str, path: Path) -> StoredObject:
        """Copy in the kernel (``shutil.copyfile``: sendfile), then hash the stored copy: three to
        ten times faster than a read/write loop for a large file."""
        final = self._final(key)
        partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
        try:
            shutil.copyfile(path, partial)
            _fsync(partial)
            _publish(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return self.checksum(key)

    def adopt(self, key: str, path: Path) -> StoredObject:
        """Rename (the API spools into the upload directory: the same filesystem), then hash by
        reading; a spool on another filesystem is copied."""
        final = self._final(key)
        try:
            _fsync(path)
            _publish(path, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                path.unlink(missing_ok=True)
                raise
            return super().adopt(key, path)
        return self.checksum(key)

    def _final(self, key: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)  # a key in a folder (rejects/JOB/...)
        return path

    def open(self, key: str, offset: int = 0, size: int | None = None) -> BinaryIO:
        path = self.path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        f = path.open("rb")
        f.seek(offset)
        return f

    def size(self, key: str) -> int:
        path = self.path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        return path.stat().st_size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def keys(self, under: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        found = (str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(under))


# -- s3:// ---------------------------------------------------------------------------------


def _client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client: credentials and region from the standard AWS variables and chain;
    path-style addressing for a named endpoint (MinIO, Ceph and moto serve no bucket DNS).
    Checksums only where the API requires them: importd hashes every object itself (sha256),
    and botocore's default CRC trailers (aws-chunked bodies, since 1.36) are refused by many
    S3-compatible stores."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, signature_version="s3v4",
                    request_checksum_calculation="when_required",
                    s3={"addressing_style": "path" if endpoint_url else "auto"},
                    connect_timeout=10, read_timeout=60)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, region_name=region,
                                          config=config)


def _transient(exc: BaseException) -> bool:
    """Errors of the network or a struggling server: worth reopening the read."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status) >= 500 or int(status) in (408, 429)
    return isinstance(exc, BotoCoreError | HTTPError | ConnectionError | TimeoutError)


def _not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _no_such_upload(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "NoSuchUpload"


class S3Store(Store):
    """Objects under ``s3://bucket/prefix/``; ``client`` a boto3 S3 client."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def name(self, key: str) -> str:
        """The object name of ``key`` (prefix joined); BadKey for an empty or escaping key."""
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise BadKey(f"key {key!r} is outside the upload store")
        return f"{self.prefix}/{key}" if self.prefix else key

    def write(self, key: str, stream: BinaryIO) -> StoredObject:
        """One PutObject for an object within a part, else a multipart upload of PART_BYTES
        parts (aborted on any error, so no parts are left to pay for). Each part is gathered
        once, in a BytesIO that boto3 then streams (a bytes body would be copied again by
        http.client, which glues it to the request head)."""
        name = self.name(key)
        digest = hashlib.sha256()
        part, size = _read_part(stream, digest)
        if size < PART_BYTES:
            self._call("put_object", Bucket=self.bucket, Key=name, Body=part)
            return StoredObject(key, size, digest.hexdigest())
        upload_id = self._call("create_multipart_upload", Bucket=self.bucket, Key=name)["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            length = size
            while length:
                etag = self._call("upload_part", Bucket=self.bucket, Key=name, UploadId=upload_id,
                                  PartNumber=len(parts) + 1, Body=part)["ETag"]
                parts.append({"PartNumber": len(parts) + 1, "ETag": etag})
                part = io.BytesIO()  # the sent part is freed before the next is gathered
                part, length = _read_part(stream, digest)
                size += length
            self._complete(name, upload_id, parts, size)
        except BaseException:
            self.abort_multipart(key, upload_id)
            self._discard(name)  # a complete that went through although its call failed
            raise
        return StoredObject(key, size, digest.hexdigest())

    def _complete(self, name: str, upload_id: str, parts: list[dict[str, Any]], size: int) -> None:
        """CompleteMultipartUpload. Its answer can be lost after the store completed (a reset,
        or a big object taking longer than the read timeout), and botocore's resends then time
        out too or find the upload gone (NoSuchUpload). An object at this upload's key with the
        size written can only be this upload's: that is success, not an error."""
        try:
            self._call("complete_multipart_upload", Bucket=self.bucket, Key=name, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
        except Exception:
            if self._stored_size(name) != size:
                raise

    def _stored_size(self, name: str) -> int | None:
        try:
            return int(self._call("head_object", Bucket=self.bucket, Key=name)["ContentLength"])
        except ObjectNotFound:
            return None

    def _discard(self, name: str) -> None:
        """Best effort: the write is failing already, and a missing key deletes fine."""
        try:
            self._call("delete_object", Bucket=self.bucket, Key=name)
        except Exception:  # noqa: BLE001 - the original error is the one to raise
            pass

    def open(self, key: str, offset: int = 0, size: int | None = None) -> BinaryIO:
        """No request yet (a HEAD only without ``size``): the first read opens the GET."""
        length = self.size(key) if size is None else size
        reader = io.BufferedReader(_S3Reader(self, self.name(key), length), buffer_size=CHUNK_BYTES)
        reader.seek(offset)
        return reader  # type: ignore[return-value]

    def size(self, key: str) -> int:
        try:
            head = self._call("head_object", Bucket=self.bucket, Key=self.name(key))
        except ObjectNotFound:
            raise ObjectNotFound(key) from None
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        self._call("delete_object", Bucket=self.bucket, Key=self.name(key))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """One GET of ``bytes=offset-(offset+length-1)``: the server sends those bytes only."""
        if length <= 0:
            return b""
        got = self._call("get_object", Bucket=self.bucket, Key=self.name(key),
                         Range=f"bytes={offset}-{offset + length - 1}")
        try:
            return bytes(got["Body"].read())
        except Exception as exc:
            if _transient(exc):
                raise StorageError(f"{self.url}: reading {key} at {offset} failed: {exc}") from exc
            raise
        finally:
            got["Body"].close()

    def keys(self, under: str = "") -> list[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start + under):
            found.extend(obj["Key"][len(start):] for obj in page.get("Contents", []))
        return sorted(found)

    def create_multipart(self, key: str) -> str:
        return str(self._call("create_multipart_upload", Bucket=self.bucket, Key=self.name(key))["UploadId"])

    def part_urls(self, key: str, upload_id: str, numbers: list[int],
                  expires_s: int = PRESIGN_EXPIRES_S) -> dict[int, str]:
        name = self.name(key)
        return {n: self.client.generate_presigned_url(
            "upload_part", Params={"Bucket": self.bucket, "Key": name, "UploadId": upload_id, "PartNumber": n},
            ExpiresIn=expires_s) for n in numbers}

    def list_parts(self, key: str, upload_id: str) -> list[Part]:
        parts: list[Part] = []
        pages = self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=self.name(key),
                                                                 UploadId=upload_id)
        for page in pages:
            parts.extend(Part(int(p["PartNumber"]), int(p["Size"]), str(p["ETag"])) for p in page.get("Parts", []))
        return parts

    def complete_multipart(self, key: str, upload_id: str, parts: list[Part]) -> None:
        self._complete(self.name(key), upload_id, [{"PartNumber": p.number, "ETag": p.etag} for p in parts],
                       sum(p.size for p in parts))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """An upload already gone (completed by a call whose answer was lost, or aborted) is
        what an abort wants: not an error."""
        try:
            self._call("abort_multipart_upload", Bucket=self.bucket, Key=self.name(key), UploadId=upload_id)
        except Exception as exc:
            if not _no_such_upload(exc):
                raise

    def open_multiparts(self) -> list[tuple[str, str]]:
        """Uploads begun and neither completed nor aborted. (rclone's S3 server answers
        NoSuchUpload instead of an empty list when there are none.)"""
        from botocore.exceptions import ClientError

        start = f"{self.prefix}/" if self.prefix else ""
        found: list[tuple[str, str]] = []
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                     Prefix=start):
                found.extend((u["Key"][len(start):], u["UploadId"]) for u in page.get("Uploads", []))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
        return found

    def presign_origin(self) -> str | None:
        """Signed locally (no request): the origin of a URL boto3 would hand out, whatever the
        addressing style (path-style on a named endpoint, the bucket's own host on AWS)."""
        url = self.client.generate_presigned_url(
            "upload_part", Params={"Bucket": self.bucket, "Key": self.name("origin.csv"), "UploadId": "origin",
                                   "PartNumber": 1}, ExpiresIn=60)
        parsed = urlparse(url)
        return f"{parsed.scheme}://{parsed.netloc}"

    def _call(self, op: str, **kwargs: Any) -> Any:
        """One S3 call (botocore already retried it); its errors translated to importd's types."""
        try:
            return getattr(self.client, op)(**kwargs)
        except Exception as exc:
            if _not_found(exc):
                raise ObjectNotFound(str(kwargs.get("Key", ""))) from exc
            if _transient(exc):
                raise StorageError(f"{self.url}: {op} failed: {exc}") from exc
            raise


def _read_part(stream: BinaryIO, digest: Any) -> tuple[io.BytesIO, int]:
    """Up to PART_BYTES of ``stream`` (fewer only at its end: a socket-like stream may return
    short reads) in a BytesIO positioned at 0, hashed into ``digest``; and its length."""
    part, length = io.BytesIO(), 0
    while length < PART_BYTES:
        chunk = stream.read(min(CHUNK_BYTES, PART_BYTES - length))
        if not chunk:
            break
        digest.update(chunk)
        part.write(chunk)
        length += len(chunk)
    part.seek(0)
    return part, length


class _S3Reader(io.RawIOBase):
    """A seekable raw stream over one object: one open-ended ranged GET, streamed from where
    the reads are; a read that breaks is retried by reopening at the current position
    (:data:`READ_ATTEMPTS`).

    GETs are what an object store charges for in time (each waits for its first byte; a
    simple server such as moto reads the whole object for every GET), so a seek costs none:
    it only moves the position, and a GET is opened again only when a read starts where the
    open one is not. The engine reads an object's head twice before its data (the header,
    then its bytes for the reject file) and then the data from just after it: the first
    :data:`HEAD_BYTES` read from offset 0 are kept and serve those reads, so a whole import
    is one GET; they are dropped once reading goes past them.
    """

    def __init__(self, store: S3Store, name: str, size: int) -> None:
        super().__init__()
        self.store, self.name, self.length = store, name, size
        self.pos = 0  # where the next read starts
        self.body: Any = None  # the open GET's stream ...
        self.body_pos = 0  # ... and the offset of its next byte
        self.head = bytearray()  # the object's first bytes, as read from offset 0
        self.keeping = True  # the head still grows (reads have been contiguous from 0)
        self.gets = 0  # ranged GETs opened (tests count reopenings)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b: Any) -> int:
        if self.pos >= self.length or not len(b):
            return 0
        if self.pos < len(self.head):
            n = min(len(b), len(self.head) - self.pos)
            with memoryview(self.head) as head:  # no copy of the slice (and no view left to block growth)
                b[:n] = head[self.pos:self.pos + n]
            self.pos += n
            return n
        try:
            for attempt in Retrying(stop=stop_after_attempt(READ_ATTEMPTS), wait=wait_exponential(0.2, max=5),
                                    retry=retry_if_exception(_transient), reraise=True):
                with attempt:
                    data = self._read(len(b))
        except Exception as exc:
            if _transient(exc):  # the job fails transiently and is retried (from its checkpoint)
                raise StorageError(f"{self.store.url}: reading {self.name} at {self.pos} failed: {exc}") from exc
            if _not_found(exc):  # deleted since it was opened
                raise ObjectNotFound(self.name) from exc
            raise
        n = len(data)
        b[:n] = data
        self._keep(data)
        self.pos += n
        return n

    def _keep(self, data: bytes) -> None:
        """Add ``data`` (read at ``pos``) to the head while it follows it and fits; at the first
        read from the object that does not (reading has gone past the head), drop the head."""
        if self.keeping and self.pos == len(self.head) and len(self.head) + len(data) <= HEAD_BYTES:
            self.head += data
            return
        self.keeping = False
        self.head = bytearray()

    def _read(self, n: int) -> bytes:
        try:
            if self.body is not None and self.body_pos != self.pos:
                self._drop()
            if self.body is None:
                self.gets += 1
                got = self.store.client.get_object(Bucket=self.store.bucket, Key=self.name,
                                                   Range=f"bytes={self.pos}-")
                self.body, self.body_pos = got["Body"], self.pos
            data: bytes = self.body.read(n)
            if not data:
                raise ConnectionError(f"object ended at {self.pos} of {self.length} bytes")
            self.body_pos += len(data)
            return data
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        body, self.body = self.body, None
        if body is not None:
            try:
                body.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                pass

    def close(self) -> None:
        self._drop()
        self.head = bytearray()
        super().close()


# -- choosing a store ----------------------------------------------------------------------


def storage_url(settings: Settings) -> str:
    """``IMPORTD_STORAGE_URL``, or ``file://`` + ``IMPORTD_UPLOAD_DIR`` when it is empty."""
    return settings.storage_url or f"file://{settings.upload_dir}"


_stores: dict[tuple[str, str], Store] = {}


def from_settings(settings: Settings) -> Store:
    """The store of these settings (one per URL and endpoint per process: boto3 clients are
    thread-safe and hold a connection pool)."""
    url, endpoint = storage_url(settings), settings.s3_endpoint_url
    found = _stores.get((url, endpoint))
    if found is None:
        found = _stores[(url, endpoint)] = open_url(url, endpoint)
    return found


def open_url(url: str, endpoint_url: str = "") -> Store:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileStore(Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"IMPORTD_STORAGE_URL={url!r} names no bucket")
        return S3Store(parsed.netloc, parsed.path, _client(endpoint_url))
    raise ValueError(f"IMPORTD_STORAGE_URL={url!r}: use file:///DIR or s3://BUCKET/PREFIX")


# -- a job's file --------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The stored file of one job: where it is and how big it is now."""

    store: Store
    key: str
    size: int

    @contextmanager
    def open(self, offset: int = 0) -> Iterator[BinaryIO]:
        f = self.store.open(self.key, offset, self.size)
        try:
            yield f
        finally:
            f.close()

    def read_range(self, offset: int, length: int) -> bytes:
        return self.store.read_range(self.key, offset, length)


def job_source(settings: Settings, locator: str | None) -> Source:
    """The object a job row names: a key in the store, or (jobs queued before keys) an absolute
    path that must resolve inside the file store's directory. BadKey / ObjectNotFound carry the
    job's error text."""
    store = from_settings(settings)
    if not locator:
        raise BadKey(f"file path {locator!r} is outside the upload directory")
    key = locator
    if os.path.isabs(locator):
        if not isinstance(store, FileStore):
            raise BadKey(f"file path {locator!r} is outside the upload directory")
        try:
            key = store.key_of(locator)
        except BadKey:
            raise BadKey(f"file path {locator!r} is outside the upload directory") from None
    try:
        return Source(store, key, store.size(key))
    except BadKey:
        raise BadKey(f"file path {locator!r} is outside the upload directory") from None
    except ObjectNotFound:
        raise ObjectNotFound(f"file not found: {locator}") from None


# -- retention ----------------------------------------------------------------------------

#: ``IMPORTD_UPLOAD_RETENTION`` values and the final job states whose object each deletes.
RETENTION: dict[str, frozenset[str]] = {
    "keep": frozenset(),
    "delete-on-success": frozenset({"SUCCESS"}),
    "delete-when-final": frozenset({"SUCCESS", "FAILURE", "CANCELLED"}),
}
#: ``IMPORTD_REJECTS_RETENTION`` values: a job's reject file is kept (``keep``: it is what the
#: user downloads to fix the rows; a lifecycle rule on ``rejects/`` collects it) or deleted
#: whenever the upload retention deletes the job's upload (``with-upload``).
REJECTS_RETENTION = ("keep", "with-upload")
#: The folder of every job's reject files, beside the uploads in the same store.
REJECTS_FOLDER = "rejects/"


def rejects_folder(job_id: str) -> str:
    """Where a job's reject files live in the store: ``rejects/<job id>/`` (one per run that
    published one; all but the one the job row names are removed by the run that superseded
    them, or by retention)."""
    return f"{REJECTS_FOLDER}{job_id}/"


def clear_rejects(store: Store, job_id: str, keep: str = "") -> int:
    """Delete the job's reject files but ``keep``; how many went. Raises what the store raises."""
    gone = 0
    for key in store.keys(rejects_folder(job_id)):
        if key != keep:
            store.delete(key)
            gone += 1
    return gone


def retire(settings: Settings, state: str | None, locator: str | None, log: Any, job_id: str | None = None) -> bool:
    """After a job's own outcome ``state`` is durable, delete its object (and, with
    ``IMPORTD_REJECTS_RETENTION=with-upload``, the reject files of ``job_id``) if the retention
    setting says so; True if the upload was deleted. Called only for outcomes the job reached
    itself (never for one given up on, whose message sits in failed_tasks for a replay). Best
    effort: a store that fails is logged, and the objects stay for a lifecycle rule to collect."""
    states = RETENTION.get(settings.upload_retention)
    if states is None:
        log.warning("unknown IMPORTD_UPLOAD_RETENTION; keeping uploads", value=settings.upload_retention)
        return False
    if state not in states:
        return False
    if job_id and settings.rejects_retention == "with-upload":
        try:
            if clear_rejects(from_settings(settings), job_id):
                log.info("reject files deleted", job_id=job_id, state=state)
        except Exception as exc:  # noqa: BLE001 - as for the upload below
            log.warning("could not delete the job's reject files", job_id=job_id, error=str(exc))
    elif settings.rejects_retention not in REJECTS_RETENTION:
        log.warning("unknown IMPORTD_REJECTS_RETENTION; keeping reject files", value=settings.rejects_retention)
    if not locator:
        return False
    try:
        source = job_source(settings, locator)
        source.store.delete(source.key)
    except (BadKey, ObjectNotFound):
        return False
    except Exception as exc:  # noqa: BLE001 - the job's outcome is recorded; cleanup can wait
        log.warning("could not delete the job's upload", key=locator, error=str(exc))
        return False
    log.info("upload deleted", key=locator, state=state, retention=settings.upload_retention)
    return True


def _measure(url: str, endpoint: str, key: str) -> None:  # pragma: no cover - a manual measurement
    import time

    store = open_url(url, endpoint)
    started = time.perf_counter()
    with store.open(key, 1) as f:
        total = sum(len(c) for c in iter(lambda: f.read(8 * 1024 * 1024), b""))
    print(f"boto3: {total} bytes in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":  # pragma: no cover
    import sys

    _measure(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "", sys.argv[3] if len(sys.argv) > 3 else "x")
