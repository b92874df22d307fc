"""Receiving an upload body without ever holding it in memory.

Two body forms: ``multipart/form-data`` (a ``file`` part plus small form fields, parsed with
python-multipart's streaming parser) and a raw CSV body (``Content-Type: text/csv``, so
``curl --data-binary @big.csv`` works; options come as query parameters). Both go straight
into the upload store (:mod:`importd.imports.storage`: the upload directory, or S3 as a
multipart upload) as they arrive, never whole in memory, and the event loop never blocks on
the store.

A raw body: :class:`BodyReader` hands it to ``importd.imports.submit.submit`` as a plain blocking
file object whose ``read`` pulls the next chunks from the event loop. A multipart file part:
the parser's chunks go through :class:`_Sink` to a thread writing the job's object (its key
chosen before the body is read, since form fields may come after the file and submit needs
them before it starts); submit then takes the stored object as it is.

Each part's headers are bounded (``IMPORTD_MAX_PART_HEADER_BYTES`` for all its lines together
and for any one line, :data:`MAX_PART_HEADERS` lines): past that the answer is 431, so a body
cannot make the parser gather header bytes without end. python-multipart (0.0.27+) enforces the
per-line and line-count limits itself; the total is counted here.

The object gets a server-chosen key (``<job id>.csv``); the client's file name is never
used for anything. Past ``IMPORTD_MAX_UPLOAD_BYTES`` the partial object is removed and the answer
is 413. To let the client read that 413 (a server that stops reading makes most clients see a
broken pipe instead), up to ``DRAIN_MAX_BYTES`` more of the body are read and thrown away.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.errors import ApiError
from importd import jsontext
from importd.imports.storage import Store, StoredObject

#: Bytes gathered in memory before one hand-over to the upload store.
WRITE_CHUNK_BYTES = 1024 * 1024
#: Chunks queued for the store's writer thread (beyond that the upload waits for the store).
SINK_QUEUE_CHUNKS = 4
#: Longest accepted value of a non-file form field.
MAX_FIELD_BYTES = 4096
#: Form fields accepted (besides ``file``).
MAX_FIELDS = 32
#: Multipart framing allowed on top of the file's own size limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
#: Body bytes read and discarded after the limit was passed, so the client sees the 413.
DRAIN_MAX_BYTES = 16 * 1024 * 1024
#: Header lines one multipart part may have (a file part needs two or three).
MAX_PART_HEADERS = 8
#: The library's messages for its own per-line / per-part header limits (it has no distinct
#: exception type for them): those are 431 too, like our total.
HEADER_LIMIT_MESSAGES = ("Maximum header size exceeded", "Maximum header count exceeded")
#: Content types taken as a raw CSV body.
RAW_TYPES = frozenset({"text/csv", "application/csv", "text/plain", "application/octet-stream"})
#: Longest multipart boundary (RFC 2046: 1 to 70 characters).
MAX_BOUNDARY = 70
#: Characters a multipart boundary may hold (RFC 2046 ``bchars``; it may not end in a space).
BOUNDARY_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")
#: Largest small JSON request body (a saved mapping of the longest header, a list of job ids).
MAX_JSON_BODY_BYTES = 1024 * 1024


@dataclass
class Upload:
    """A received upload: the object in the upload store, and the form fields that came with it."""

    stored: StoredObject
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.stored.size


class _Sink:
    """Size-limited writer of the file part straight into the upload store, as it arrives.

    The store's ``write`` (blocking: a file, or an S3 multipart upload) runs in a thread and
    reads what the event loop hands it through a queue of at most :data:`SINK_QUEUE_CHUNKS`
    chunks, so memory stays a few chunks (plus one S3 part) whatever the size. ``discard``
    makes that read fail, and the store then leaves nothing behind (no file, no open upload).
    """

    def __init__(self, upload: Store, key: str, limit: int) -> None:
        self.upload, self.key, self.limit = upload, key, limit
        self.size = 0
        self.buffer = bytearray()
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=SINK_QUEUE_CHUNKS)
        self.aborted = threading.Event()
        self.done = threading.Event()
        self.stored: StoredObject | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Future[None] | None = None
        self.rest = b""

    def append(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise ApiError(413, "payload_too_large", f"upload exceeds {self.limit} bytes", limit_bytes=self.limit)
        self.buffer += data

    def _start(self) -> None:
        """Start the writer on one of the threadpool's threads (reused between uploads: a thread
        of its own per upload cost a fresh malloc arena, ~10 MB of RSS, each time)."""
        if self.task is None:
            self.task = asyncio.ensure_future(anyio.to_thread.run_sync(self._write))

    async def flush(self, force: bool = False) -> None:
        if not self.buffer or (len(self.buffer) < WRITE_CHUNK_BYTES and not force):
            return
        self._start()
        chunk, self.buffer = bytes(self.buffer), bytearray()
        await anyio.to_thread.run_sync(self._put, chunk)

    async def close(self) -> StoredObject:
        self._start()
        await self.flush(force=True)
        await anyio.to_thread.run_sync(self._put, None)
        await anyio.to_thread.run_sync(self.done.wait)
        if self.error is not None:
            raise self.error
        assert self.stored is not None
        return self.stored

    async def discard(self) -> None:
        """Stop the write; wait until the store has removed what it had (or, if it had already
        finished, delete the object)."""
        self.aborted.set()
        if self.task is not None:
            await anyio.to_thread.run_sync(self.done.wait)
        if self.stored is not None:
            await anyio.to_thread.run_sync(self.upload.delete, self.key)

    def _put(self, chunk: bytes | None) -> None:
        """Hand ``chunk`` (None: the end) to the writer thread; raise the writer's error if it
        stopped."""
        while True:
            if self.done.is_set():
                if self.error is not None:
                    raise self.error
                return
            try:
                self.chunks.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def _write(self) -> None:
        try:
            self.stored = self.upload.write(self.key, self)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop side
            self.error = exc
        finally:
            self.done.set()

    def read(self, n: int = -1) -> bytes:
        """The store's side: the next bytes of the part (b"" at its end)."""
        while not self.rest:
            if self.aborted.is_set():
                raise ConnectionAbortedError("the upload was abandoned")
            try:
                item = self.chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return b""
            self.rest = item
        cut = len(self.rest) if n is None or n < 0 else n
        out, self.rest = self.rest[:cut], self.rest[cut:]
        return out


class BodyReader(io.RawIOBase):
    """A blocking, read-only file over the request body, for code running in the threadpool.

    Each ``read(n)`` makes one trip to the event loop, which gathers at least ``n`` bytes from
    the body (or its end). Errors of the body (the client went away) surface in ``read``.
    """

    def __init__(self, request: Request, limit: int) -> None:
        super().__init__()
        self.request = request
        self.limit = limit
        self.stream: AsyncIterator[bytes] = request.stream()
        self.buffer = bytearray()
        self.eof = False
        self.size = 0
        self.digest = hashlib.sha256()  # of the bytes handed out so far

    def readable(self) -> bool:
        return True

    async def _fill(self, n: int) -> None:
        while not self.eof and len(self.buffer) < n:
            try:
                chunk = await self.stream.__anext__()
            except StopAsyncIteration:
                self.eof = True
                return
            self.size += len(chunk)
            self.buffer += chunk

    def read(self, n: int | None = -1) -> bytes:
        want = WRITE_CHUNK_BYTES if n is None or n < 0 else n
        if len(self.buffer) < want and not self.eof:
            anyio.from_thread.run(self._fill, want)
        out = bytes(self.buffer[:want])
        del self.buffer[:want]
        self.digest.update(out)
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    async def drain(self) -> None:
        """After a refusal: read (and drop) up to DRAIN_MAX_BYTES more so the client sees it."""
        self.buffer.clear()
        await _drain(self.request, self.stream)

    async def sha256_of_all(self) -> str:
        """The sha256 (hex) of the whole body: what was handed out, then the rest, read here
        and dropped (413 past ``limit``)."""
        self.digest.update(self.buffer)
        self.buffer.clear()
        async for chunk in self.stream:
            self.size += len(chunk)
            if self.size > self.limit:
                raise ApiError(413, "payload_too_large", f"upload exceeds {self.limit} bytes", limit_bytes=self.limit)
            self.digest.update(chunk)
        self.eof = True
        return self.digest.hexdigest()


def check_raw(request: Request, limit: int) -> None:
    """Refuse a raw body by its headers alone: wrong type (415) or declared too large (413)."""
    mime, _ = parse_options_header(request.headers.get("content-type", ""))
    if mime.decode("latin-1").lower() not in RAW_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data with a file part, or the CSV itself as text/csv")
    length = _content_length(request)
    if length is not None and length > limit:
        raise ApiError(413, "payload_too_large", f"upload exceeds {limit} bytes", limit_bytes=limit)


def is_multipart(request: Request) -> bool:
    mime, _ = parse_options_header(request.headers.get("content-type", ""))
    return mime.decode("latin-1").lower() == "multipart/form-data"


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        raise ApiError(400, "bad_request", "invalid Content-Length") from None


async def _drain(request: Request, stream: object) -> None:
    """Read (and drop) up to DRAIN_MAX_BYTES more, so the client gets to read our answer."""
    read = 0
    try:
        async for chunk in stream:  # type: ignore[attr-defined]
            read += len(chunk)
            if read > DRAIN_MAX_BYTES:
                return
    except ClientDisconnect:
        return


def part_headers_too_large(header_limit: int) -> ApiError:
    return ApiError(431, "part_headers_too_large",
                    f"a multipart part's headers exceed {header_limit} bytes or {MAX_PART_HEADERS} lines",
                    limit_bytes=header_limit)


def boundary_of(request: Request) -> bytes:
    """The multipart boundary of the request's Content-Type; 400 ``bad_multipart`` unless it
    is one RFC 2046 allows (1 to 70 of its characters, no trailing space). The parser refused
    a longer one only as it was built, outside any handling: that answered 500."""
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart body without a boundary")
    if len(boundary) > MAX_BOUNDARY or not set(boundary) <= BOUNDARY_CHARS or boundary.endswith(b" "):
        raise ApiError(400, "bad_multipart", f"invalid multipart boundary: 1 to {MAX_BOUNDARY} characters of "
                                             "letters, digits and '()+_,-./:=? (RFC 2046)")
    return bytes(boundary)


async def receive_multipart(request: Request, upload: Store, key: str, limit: int,
                            header_limit: int = 8192) -> Upload:
    """Stream a multipart body's file part into ``upload`` as ``key``; raise ApiError (400, 413,
    431) on a bad body, leaving nothing stored. ``header_limit`` bounds the bytes of each part's
    headers (431 past it)."""
    boundary = boundary_of(request)
    length = _content_length(request)
    if length is not None and length > limit + MULTIPART_OVERHEAD_BYTES:
        raise ApiError(413, "payload_too_large", f"upload exceeds {limit} bytes", limit_bytes=limit)
    sink = _Sink(upload, key, limit)
    stream = request.stream()
    try:
        fields = await _receive_multipart(stream, boundary, sink, header_limit)
        stored = await sink.close()
    except ApiError as exc:
        await sink.discard()
        if exc.status in (413, 431):
            await _drain(request, stream)
        raise
    except ClientDisconnect:
        await sink.discard()
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None
    except BaseException:
        with anyio.CancelScope(shield=True):
            await sink.discard()
        raise
    return Upload(stored, fields)


async def _receive_multipart(stream: object, boundary: bytes, sink: _Sink, header_limit: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    part: dict[str, object] = {}
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    headers: dict[str, bytes] = {}
    header_bytes = [0]  # of the current part, all its lines together
    seen_file = [False]
    done = [False]

    def count_header(size: int) -> None:
        header_bytes[0] += size
        if header_bytes[0] > header_limit:
            raise part_headers_too_large(header_limit)

    def on_part_begin() -> None:
        part.clear()
        headers.clear()
        header_bytes[0] = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        count_header(end - start)
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        count_header(end - start)
        header["value"] += data[start:end]

    def on_header_end() -> None:
        headers[bytes(header["field"]).decode("latin-1").lower()] = bytes(header["value"])
        header["field"], header["value"] = bytearray(), bytearray()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get("content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise ApiError(400, "bad_multipart", "a form part without a name")
        is_file = name == "file"
        if is_file and seen_file[0]:
            raise ApiError(400, "bad_multipart", "more than one file part")
        if not is_file and b"filename" in disposition:
            raise ApiError(400, "bad_multipart", f"unexpected file part {name!r}: send the CSV as 'file'")
        if not is_file and len(fields) >= MAX_FIELDS:
            raise ApiError(400, "bad_multipart", "too many form fields")
        seen_file[0] |= is_file
        part.update(name=name, file=is_file, value=bytearray())

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("file"):
            sink.append(data[start:end])
            return
        value = part["value"]
        assert isinstance(value, bytearray)
        value += data[start:end]
        if len(value) > MAX_FIELD_BYTES:
            raise ApiError(400, "bad_request", f"form field {part['name']!r} is too long")

    def on_part_end() -> None:
        if not part.get("file") and "name" in part:
            value = part["value"]
            assert isinstance(value, bytearray)
            fields[str(part["name"])] = value.decode("utf-8", "replace")

    def on_end() -> None:
        done[0] = True

    try:
        parser = MultipartParser(boundary, {  # type: ignore[arg-type]
            "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data, "on_part_end": on_part_end, "on_end": on_end,
        }, max_header_count=MAX_PART_HEADERS, max_header_size=header_limit)
        async for chunk in stream:  # type: ignore[attr-defined]
            parser.write(chunk)
            await sink.flush()
        parser.finalize()
    except FormParserError as exc:
        if str(exc).startswith(HEADER_LIMIT_MESSAGES):
            raise part_headers_too_large(header_limit) from None
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from None
    if not done[0]:
        raise ApiError(400, "bad_multipart", "the multipart body ended early")
    if not seen_file[0]:
        raise ApiError(400, "bad_request", "no 'file' part in the form")
    return fields


class _HashSink(_Sink):
    """Hashes the file part and drops it (a request replayed under an Idempotency-Key is
    compared with its job, never stored); refuses past ``limit`` like the store's sink."""

    def __init__(self, limit: int) -> None:  # no store: nothing is written
        self.limit, self.size, self.buffer, self.digest = limit, 0, bytearray(), hashlib.sha256()

    def append(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise ApiError(413, "payload_too_large", f"upload exceeds {self.limit} bytes", limit_bytes=self.limit)
        self.digest.update(data)

    async def flush(self, force: bool = False) -> None:
        return None


async def hash_multipart(request: Request, limit: int, header_limit: int = 8192) -> tuple[str, dict[str, str]]:
    """The sha256 (hex) of a multipart body's file part and the form fields; nothing stored."""
    sink = _HashSink(limit)
    try:
        fields = await _receive_multipart(request.stream(), boundary_of(request), sink, header_limit)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None
    return sink.digest.hexdigest(), fields


async def hash_raw(request: Request, limit: int) -> str:
    """The sha256 (hex) of a raw body (checked as :func:`check_raw` does); nothing stored."""
    check_raw(request, limit)
    return await BodyReader(request, limit).sha256_of_all()


class _HeadSink(_Sink):
    """Keeps the first ``keep`` bytes of the file part in memory and drops the rest (a preview
    reads the head only); never writes a file. A file past ``limit`` (the upload's own limit)
    is 413 as its upload would be: the body is not read on for a file nobody could load."""

    def __init__(self, keep: int, limit: int) -> None:  # no store: nothing is written
        self.keep, self.limit, self.size, self.buffer, self.more = keep, limit, 0, bytearray(), False

    def append(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise ApiError(413, "payload_too_large", f"upload exceeds {self.limit} bytes", limit_bytes=self.limit)
        room = self.keep - len(self.buffer)
        if len(data) > room:
            self.more = True
        if room > 0:
            self.buffer += data[:room]

    async def flush(self, force: bool = False) -> None:
        return None


async def receive_multipart_head(request: Request, keep: int, limit: int,
                                 header_limit: int = 8192) -> tuple[bytes, bool, dict[str, str]]:
    """The first ``keep`` bytes of a multipart body's file part, whether more followed, and
    the form fields. The body is read to its end (fields may follow the file) but memory holds
    ``keep`` bytes of the file at most; a file part past ``limit`` bytes is 413."""
    boundary = boundary_of(request)
    length = _content_length(request)
    if length is not None and length > limit + MULTIPART_OVERHEAD_BYTES:
        raise ApiError(413, "payload_too_large", f"upload exceeds {limit} bytes", limit_bytes=limit)
    sink = _HeadSink(keep, limit)
    stream = request.stream()
    try:
        fields = await _receive_multipart(stream, boundary, sink, header_limit)
    except ApiError as exc:
        if exc.status in (413, 431):
            await _drain(request, stream)
        raise
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None
    return bytes(sink.buffer), sink.more, fields


async def read_raw_head(request: Request, keep: int) -> tuple[bytes, bool]:
    """The first ``keep`` bytes of a raw body and whether more followed; the rest is not read."""
    head = bytearray()
    try:
        async for chunk in request.stream():
            head += chunk
            if len(head) > keep:
                return bytes(head[:keep]), True
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None
    return bytes(head), False


async def json_object(request: Request, limit: int = MAX_JSON_BODY_BYTES, empty: bool = False) -> dict[str, Any]:
    """A small JSON request body that must be an object: 413 past ``limit`` bytes (read no
    further, so memory holds ``limit`` at most), 400 unless it is an I-JSON object
    (:func:`json_value`: nesting too deep for the parser included). ``empty``: no body at all
    is ``{}``."""
    raw = bytearray()
    stream = request.stream()
    try:
        async for chunk in stream:
            raw += chunk
            if len(raw) > limit:
                await _drain(request, stream)
                raise ApiError(413, "payload_too_large", f"a JSON body of at most {limit} bytes",
                               limit_bytes=limit)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away during the request") from None
    if empty and not raw:
        return {}
    body = json_value(bytes(raw) or b"{}", "the body")
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def json_value(raw: bytes | str, what: str) -> Any:
    """The JSON value of a request's body or field; 400 ``bad_request`` naming ``what`` for any
    defect (:mod:`importd.jsontext`: also nesting past the recursion limit, which escaped as
    RecursionError and answered 500, duplicate keys, NaN, lone surrogates)."""
    try:
        return jsontext.loads(raw)
    except jsontext.JsonError as exc:
        raise ApiError(400, "bad_request", f"{what} must be JSON: {exc}") from None
