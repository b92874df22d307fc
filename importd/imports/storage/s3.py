"""``s3://BUCKET/PREFIX`` uploads (:class:`S3Store`): any S3-compatible store (AWS S3, MinIO,
Ceph RGW, rclone) through boto3.

``IMPORTD_S3_ENDPOINT_URL`` names a non-AWS endpoint; credentials and region come from the
standard AWS variables and boto3's credential chain. Writes are one PutObject or a multipart
upload of :data:`~importd.imports.storage.base.PART_BYTES` parts (memory stays one part,
aborted on failure); reads are one open-ended ranged GET per import (:class:`_S3Reader`),
reopened at the current offset when it breaks (what the reader measured: docs/benchmarks.md,
"Reading from S3"). ``python -m importd.imports.storage.s3 URL ENDPOINT KEY`` re-measures against another store.

Why boto3 and not obstore: the presigned multipart upload (a client PUTs parts straight to the
store) needs CreateMultipartUpload / UploadPart URLs signed with the upload id and part
number, ListParts (to resend only missing parts), Complete and Abort, and the "nothing left
behind" check needs ListMultipartUploads. boto3 has all of them; obstore 0.12 exposes neither
the multipart ids nor part-URL signing. Both read ~600 MB/s here (a 100 MB ranged read from a
local moto server: 0.16 s through this reader, 0.18 s through obstore), far more than COPY
takes in, so speed does not decide.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, BinaryIO
from urllib.parse import urlparse

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from importd.imports.storage.base import (
    CHUNK_BYTES,
    PART_BYTES,
    PRESIGN_EXPIRES_S,
    BadKey,
    ObjectNotFound,
    Part,
    StorageError,
    Store,
    StoredObject,
)

#: Times a broken read is reopened at its offset before the error reaches the job (transient).
READ_ATTEMPTS = 5
#: Bytes of an object's head an S3 reader keeps while the engine reads it again (the header, up
#: to ``max_line_bytes`` plus a read buffer, then its bytes for the reject file): see _S3Reader.
HEAD_BYTES = 8 * 1024 * 1024


def make_client(endpoint_url: str | None) -> Any:
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


def _measure(url: str, endpoint: str, key: str) -> None:  # pragma: no cover - a manual measurement
    import time

    parsed = urlparse(url)
    store = S3Store(parsed.netloc, parsed.path, make_client(endpoint))
    started = time.perf_counter()
    with store.open(key, 1) as f:
        total = sum(len(c) for c in iter(lambda: f.read(8 * 1024 * 1024), b""))
    print(f"boto3: {total} bytes in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":  # pragma: no cover
    import sys

    _measure(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "", sys.argv[3] if len(sys.argv) > 3 else "x")
