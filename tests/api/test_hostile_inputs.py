"""Hostile inputs of the kinds issue 12 named, at every API place that takes them: each is a
4xx JSON error naming the problem, never a 500, and nothing is queued.

- JSON in a request (the ``columns`` field of an upload or preview, the bodies of saved
  mappings, dead-letter replays and presigned uploads, the job list's cursor): nesting past
  the recursion limit raised RecursionError, which no ``except ValueError`` caught (500);
  duplicate keys, NaN and lone surrogate escapes parsed and then failed later (a NUL or a
  surrogate in ``columns`` reached PostgreSQL's jsonb: 500).
- A multipart boundary longer than the parser takes made building the parser raise outside
  any handling (500).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from api import bodies
from tests.api.conftest import HEADER

pytestmark = pytest.mark.anyio

TABLE = "public.api_people"
CSV = HEADER + b"1,Ann,30\n"
#: JSON texts json.loads mishandles: past the recursion limit (RecursionError), duplicate keys,
#: NaN/Infinity, a lone surrogate escape, a number past the int digits limit.
BAD_JSON = {
    "deep": "[" * 3000,
    "deep-object": '{"a": ' * 2000,
    "duplicate-key": '{"id": "id", "id": "name"}',
    "nan": '{"id": NaN}',
    "infinity": '{"id": -Infinity}',
    "surrogate": '{"id": "\\ud800"}',
    "surrogate-key": '{"\\udfff": "id"}',
    "huge-number": '{"id": ' + "9" * 5000 + "}",
}


def _multipart(fields: dict[str, str], boundary: str = "b0undary", file: bytes = CSV) -> tuple[bytes, dict[str, str]]:
    parts = b"".join(b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="' + k.encode()
                     + b'"\r\n\r\n' + v.encode() + b"\r\n" for k, v in fields.items())
    parts += (b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
              b"Content-Type: text/csv\r\n\r\n" + file + b"\r\n--" + boundary.encode() + b"--\r\n")
    return parts, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _requests(bad: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every place a request carries JSON, with ``bad`` there: name -> (method, url, httpx kwargs)."""
    form, headers = _multipart({"table": TABLE, "columns": bad})
    cursor = base64.urlsafe_b64encode(bad.encode()).decode().rstrip("=")
    return {
        "upload-raw-columns": ("POST", "/api/upload", {"params": {"table": TABLE, "columns": bad}, "content": CSV,
                                                       "headers": {"Content-Type": "text/csv"}}),
        "upload-form-columns": ("POST", "/api/upload", {"content": form, "headers": headers}),
        "preview-form-columns": ("POST", "/api/preview", {"content": form, "headers": headers}),
        "jobs-cursor": ("GET", "/api/jobs", {"params": {"cursor": cursor}}),
        "mappings-body": ("PUT", "/api/mappings", {"content": bad, "headers": {"Content-Type": "application/json"}}),
        "dlq-replay-body": ("POST", "/api/dlq/replay", {"content": bad,
                                                        "headers": {"Content-Type": "application/json"}}),
        "presigned-body": ("POST", "/api/uploads", {"content": bad, "headers": {"Content-Type": "application/json"}}),
    }


@pytest.mark.parametrize("place", sorted(_requests("")))
@pytest.mark.parametrize("kind", sorted(BAD_JSON))
async def test_json_nobody_should_accept_is_a_400_wherever_the_api_reads_json(api_client: Any, broker: Any,
                                                                              place: str, kind: str) -> None:
    method, url, kwargs = _requests(BAD_JSON[kind])[place]
    async with api_client() as c:
        r = await c.request(method, url, **kwargs)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["error"]["code"] in ("bad_request", "bad_cursor"), r.text
    assert broker.depth("import_queue") == 0


@pytest.mark.parametrize("url", ["/api/mappings", "/api/dlq/replay"])
async def test_a_json_body_past_its_limit_is_413_and_not_read_whole(api_client: Any, url: str) -> None:
    body = json.dumps({"job_ids": ["a" * 30] * 40_000}).encode()  # ~1.4 MB, past MAX_JSON_BODY_BYTES
    async with api_client() as c:
        r = await c.request("PUT" if url == "/api/mappings" else "POST", url, content=body,
                            headers={"Content-Type": "application/json"})
    assert len(body) > bodies.MAX_JSON_BODY_BYTES
    assert r.status_code == 413, r.text


@pytest.mark.parametrize("boundary", [
    "b" * 71,                  # one past RFC 2046's 70
    "b" * 257,                 # past python-multipart's 256: the parser refused it as it was built (500)
    "b" * 100_000,
    "a{b}",                    # characters RFC 2046 does not allow
    "abc\\def",
    "trailing ",
])
@pytest.mark.parametrize("url", ["/api/upload", "/api/preview"])
async def test_a_multipart_boundary_rfc_2046_does_not_allow_is_400_and_nothing_is_queued(
        api_client: Any, broker: Any, url: str, boundary: str) -> None:
    body, headers = _multipart({"table": TABLE}, boundary=boundary)
    headers["Content-Type"] = f'multipart/form-data; boundary="{boundary}"'
    async with api_client() as c:
        r = await c.post(url, content=body, headers=headers)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["error"]["code"] == "bad_multipart"
    assert broker.depth("import_queue") == 0


@pytest.mark.parametrize("boundary", ["b", "b" * 70, "----WebKitFormBoundary7MA4YWxkTrZu0gW", "a'()+_,-./:=?b",
                                      "with space"])
async def test_every_boundary_rfc_2046_allows_is_taken(api_client: Any, broker: Any, boundary: str) -> None:
    body, headers = _multipart({"table": TABLE}, boundary=boundary)
    headers["Content-Type"] = f'multipart/form-data; boundary="{boundary}"'
    async with api_client() as c:
        r = await c.post("/api/upload", content=body, headers=headers)
    assert r.status_code == 202, r.text


#: Options a job row cannot hold (PostgreSQL refused them as the job was created: 500).
UNSTORABLE_OPTIONS = {
    "delimiter-nul": ({"delimiter": "\x00"}, b"name\n"),  # one column: the header has no NUL to refuse
    "columns-nul-key": ({"columns": '{"x\\u0000": "name"}'}, CSV),
    "columns-nul-value": ({"columns": '{"id": "id", "zz": "na\\u0000me"}'}, CSV),
    "columns-long": ({"columns": '{"id": "' + "i" * 5000 + '"}'}, CSV),
}


@pytest.mark.parametrize("multipart", [False, True], ids=["raw", "multipart"])
@pytest.mark.parametrize("case", sorted(UNSTORABLE_OPTIONS))
async def test_options_a_job_row_cannot_hold_are_a_400_and_nothing_is_queued(
        api_client: Any, broker: Any, case: str, multipart: bool) -> None:
    options, csv = UNSTORABLE_OPTIONS[case]
    if multipart:
        body, headers = _multipart({"table": TABLE, **options}, file=csv)
        kwargs: dict[str, Any] = {"content": body, "headers": headers}
    else:
        kwargs = {"params": {"table": TABLE, **options}, "content": csv, "headers": {"Content-Type": "text/csv"}}
    async with api_client() as c:
        r = await c.post("/api/upload", **kwargs)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["error"]["code"] in ("bad_upload", "bad_request"), r.text
    assert broker.depth("import_queue") == 0


def _idempotent(key: str, multipart: bool, body: bytes = CSV, **params: str) -> dict[str, Any]:
    fields = {"table": TABLE, **params}
    if multipart:
        content, headers = _multipart(fields, file=body)
        return {"content": content, "headers": {**headers, "Idempotency-Key": key}}
    return {"params": fields, "content": body, "headers": {"Content-Type": "text/csv", "Idempotency-Key": key}}


@pytest.mark.parametrize("multipart", [False, True], ids=["raw", "multipart"])
@pytest.mark.parametrize(("other", "params"), [
    (HEADER + b"2,Bob,40\n", {}),                 # another file
    (CSV, {"max_errors": "5"}),                   # the same file, other options
    (CSV, {"mode": "resumable"}),
    (CSV, {"priority": "9"}),
    (CSV, {"columns": '{"id": "id", "name": "name", "age": "age"}'}),
], ids=["file", "max_errors", "mode", "priority", "columns"])
async def test_an_idempotency_key_reused_for_another_request_is_422_and_the_first_job_stands(
        api_client: Any, api_settings: Any, broker: Any, multipart: bool, other: bytes, params: dict[str, str]) -> None:
    """An Idempotency-Key names one request (IETF Idempotency-Key draft): a second request
    with the key and another file or other options got 202 with the first job, so the client
    believed its second file queued while it never was. Now 422 names the job; nothing of the
    second request is stored or queued; the same request again still gets the job (202)."""
    key = f"reuse-{uuid.uuid4().hex}"
    async with api_client() as c:
        first = await c.post("/api/upload", **_idempotent(key, multipart))
        assert first.status_code == 202, first.text
        stored = _keys(api_settings)
        reused = await c.post("/api/upload", **_idempotent(key, multipart, other, **params))
        again = await c.post("/api/upload", **_idempotent(key, not multipart))  # the same request, either form
    assert reused.status_code == 422, reused.text
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert reused.json()["error"]["job_id"] == first.json()["job_id"]
    assert again.status_code == 202 and again.json()["job_id"] == first.json()["job_id"], again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert broker.depth("import_queue") == 1 and _keys(api_settings) == stored


def _keys(settings: Any) -> set[str]:
    from importd.imports import storage

    return set(storage.from_settings(settings).keys())


@pytest.mark.parametrize("header", [
    b",".join(b"c%d" % i for i in range(300_000)),      # 300 000 unknown names (2 MB)
    b"id,name,age," + b"x" * 120_000,                    # one unknown name of 120 KB
    b",".join([b"id", b"name"] + [b"a%d" % (i % 25_000) for i in range(50_000)]),  # 25 000 names twice
], ids=["many-names", "long-name", "many-duplicates"])
async def test_a_header_problem_lists_a_bounded_number_of_names(api_client: Any, broker: Any, header: bytes) -> None:
    """An enormous header is refused with a short answer: its problem names the first names
    (each cut) and counts the rest; it used to list every name (a multi-megabyte 400, and the
    same text as the job's error in PostgreSQL, Redis and its event stream)."""
    async with api_client(max_line_bytes=8 * 1024 * 1024) as c:
        r = await c.post("/api/upload", params={"table": TABLE}, content=header + b"\n1,a,2\n",
                         headers={"Content-Type": "text/csv"})
    assert r.status_code == 400, r.text[:300]
    assert len(r.content) < 8192, r.text[:300]
    assert broker.depth("import_queue") == 0
