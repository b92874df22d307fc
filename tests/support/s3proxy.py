"""An HTTP proxy in front of a test S3 server that sees every part a client PUTs and can make
chosen ones fail, as a flaky link or a refusing store would.

The API is given the proxy as its S3 endpoint, so the presigned part URLs it hands out point
here and the browser PUTs its parts through it (a signature covers the Host header, which the
proxy passes on unchanged). What it records is observed outside both the browser and the API:
the parts that reached the store, with their sizes, and the attempts that did not.

Each connection carries one request (``Connection: close``): a browser resends by itself a
request whose *reused* connection dropped, and that resend must not hide whether the page
itself resent a part.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: Headers that belong to one hop and are not passed on.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "content-length"})
#: What a store answers to a GET of a key it does not hold (AWS's wording).
NO_SUCH_KEY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
               b"<Message>The specified key does not exist.</Message></Error>")
#: What a store answers to a URL past its expiry (AWS's wording).
EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
           b"<Message>Request has expired</Message></Error>")


@dataclass(frozen=True)
class PartPut:
    """One PUT of a part as the proxy saw it: ``outcome`` is ``stored`` (passed on and
    answered 2xx by the store), ``dropped`` (connection reset halfway), ``lost`` (answered 200,
    not passed on) or ``refused`` (403)."""

    number: int
    bytes: int
    outcome: str


class StoreProxy:
    """Forwards 127.0.0.1:<port> to the S3 server at ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.puts: list[PartPut] = []
        #: Part numbers whose next PUT is cut halfway (each once).
        self.drop_once: set[int] = set()
        #: Part numbers whose next PUT is answered 200 but not passed on (each once): a store
        #: that lost a part it acknowledged, which complete then finds missing.
        self.lose_once: set[int] = set()
        #: Answer every part PUT 403 "Request has expired" (the store refuses).
        self.refuse = False
        #: Pass this many of the next CompleteMultipartUploads on, then reset the client's
        #: connection instead of answering: the store completed, the client never heard.
        self.lose_complete_answers = 0
        #: Completes whose answer was lost so far.
        self.complete_answers_lost = 0
        #: Answer every GET 404 NoSuchKey while HEAD still finds the object: an object deleted
        #: between a reader's HEAD (its size) and its GET (issue 12 item 1).
        self.missing_gets = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def record(self, put: PartPut) -> None:
        with self._lock:
            self.puts.append(put)

    def take(self, faults: set[int], number: int) -> bool:
        """Whether part ``number`` meets one of ``faults`` now (each fault happens once)."""
        with self._lock:
            if number in faults:
                faults.discard(number)
                return True
            return False

    def take_complete_fault(self) -> bool:
        with self._lock:
            if self.lose_complete_answers <= 0:
                return False
            self.lose_complete_answers -= 1
            self.complete_answers_lost += 1
            return True

    def stored(self) -> dict[int, int]:
        """Part number -> bytes of the PUT the store took (the last one per part)."""
        return {p.number: p.bytes for p in self.puts if p.outcome == "stored"}

    def attempts(self) -> dict[int, int]:
        """Part number -> PUTs of it that reached the proxy."""
        counts: dict[int, int] = {}
        for p in self.puts:
            counts[p.number] = counts.get(p.number, 0) + 1
        return counts

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(proxy: StoreProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: see the module docstring

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            number = _part_number(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if number is not None and proxy.take(proxy.drop_once, number):
                self.rfile.read(length // 2)
                proxy.record(PartPut(number, length // 2, "dropped"))
                self._reset()  # the client sees the connection drop mid-body
                return
            body = self.rfile.read(length)
            if number is not None and proxy.take(proxy.lose_once, number):
                proxy.record(PartPut(number, len(body), "lost"))
                self._answer(200, [("ETag", '"lost"'), *self._cors()], b"")
                return
            if number is not None and proxy.refuse:
                proxy.record(PartPut(number, len(body), "refused"))
                self._answer(403, [("Content-Type", "application/xml"), *self._cors()], EXPIRED)
                return
            status = self._forward(body)
            if number is not None:
                proxy.record(PartPut(number, len(body), "stored" if 200 <= status < 300 else f"http {status}"))

        def do_GET(self) -> None:  # noqa: N802
            if proxy.missing_gets and "uploadId" not in self.path:
                self._answer(404, [("Content-Type", "application/xml")], NO_SUCH_KEY)
                return
            self._forward(b"")

        def do_HEAD(self) -> None:  # noqa: N802
            self._forward(b"")

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if _completes(self.path) and proxy.take_complete_fault():
                self._forward(body, answer=False)
                self._reset()
                return
            self._forward(body)

        def do_DELETE(self) -> None:  # noqa: N802
            self._forward(b"")

        def do_OPTIONS(self) -> None:  # noqa: N802 - a browser's CORS preflight, answered by the store
            self._forward(b"")

        def _cors(self) -> list[tuple[str, str]]:
            """What a store with a matching CORS rule adds to an error, so the page can read it."""
            origin = self.headers.get("Origin")
            return [("Access-Control-Allow-Origin", origin)] if origin else []

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _forward(self, body: bytes, answer: bool = True) -> int:
            upstream = http.client.HTTPConnection(*proxy.target, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
                if not answer:
                    return response.status
                self._answer(response.status, kept, data, head=self.command == "HEAD",
                             length=response.getheader("Content-Length"))
                return response.status
            finally:
                upstream.close()

        def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes, head: bool = False,
                    length: str | None = None) -> None:
            self.send_response_only(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", length if head and length else str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(data)

    return Handler


def _part_number(path: str) -> int | None:
    found = parse_qs(urlsplit(path).query).get("partNumber")
    return int(found[0]) if found else None


def _completes(path: str) -> bool:
    """A CompleteMultipartUpload: a POST naming an upload (CreateMultipartUpload names none)."""
    return "uploadId" in parse_qs(urlsplit(path).query)
