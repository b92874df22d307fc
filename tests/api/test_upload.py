"""``POST /api/upload`` on real services: streamed to disk, checked, recorded, published."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from importd import keys
from importd.config import Settings
from importd.imports import store
from tests.api.conftest import HEADER, TABLES
from tests.support.headers import DELIMITERS, ENCODINGS, FIRST_LINES, KNOWN_BAD
from tests.support.infra import wait_for

pytestmark = pytest.mark.anyio
GOOD = HEADER + b"1,Ann,30\n2,Bob,40\n"


def files_in(settings: Settings) -> set[str]:
    return {p.name for p in Path(settings.upload_dir).iterdir()}


async def test_raw_csv_body_is_stored_recorded_and_published_with_its_priority(
        api_client: Any, api_settings: Settings, broker: Any) -> None:
    async with api_client() as c:
        r = await c.post("/api/upload?table=public.api_people&priority=7&mode=resumable&max_errors=3",
                         content=GOOD, headers={"Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    body = r.json()
    job_id = body["job_id"]
    assert body["state"] == "PENDING"
    assert body["status_url"] == f"/api/jobs/{job_id}" == r.headers["location"]
    assert body["events_url"] == f"/api/jobs/{job_id}/events"
    with store.connect(api_settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None
    assert (rec.state, rec.priority, rec.mode, rec.options["max_errors"]) == ("PENDING", 7, "resumable", 3)
    assert rec.file_path == f"{job_id}.csv"  # a key in the store, never a host path
    assert (Path(api_settings.upload_dir) / rec.file_path).read_bytes() == GOOD
    [msg] = broker.get_all("import_queue")
    assert msg.properties["priority"] == 7
    assert json.loads(msg.body)["job_id"] == job_id
    assert f"{job_id}.csv" in files_in(api_settings)
    assert not any(name.startswith("upload-") for name in files_in(api_settings))  # the spool file is gone


async def test_multipart_upload_takes_fields_before_or_after_the_file_and_ignores_the_client_file_name(
        api_client: Any, api_settings: Settings, broker: Any) -> None:
    async with api_client() as c:
        r = await c.post("/api/upload", files={"file": ("../../etc/evil.csv", GOOD, "text/csv")},
                         data={"table": "public.api_people", "priority": "3", "validate_only": "true"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    with store.connect(api_settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None and rec.priority == 3 and rec.options["validate_only"] is True
    assert Path(rec.file_path or "").name == f"{job_id}.csv"
    assert not any("evil" in name for name in files_in(api_settings))
    assert not Path("/etc/evil.csv").exists()
    assert len(broker.get_all("import_queue")) == 1


async def test_upload_past_the_size_limit_is_413_and_leaves_no_partial_file(
        api_client: Any, api_settings: Settings, broker: Any) -> None:
    before = files_in(api_settings)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit is found mid-stream
        yield HEADER
        for _ in range(40):
            yield b"1,Ann,30\n" * 1000

    async with api_client(max_upload_bytes=100_000) as c:
        declared = await c.post("/api/upload?table=public.api_people", content=GOOD * 20_000,
                                headers={"Content-Type": "text/csv"})
        streamed = await c.post("/api/upload?table=public.api_people", content=chunks(),
                                headers={"Content-Type": "text/csv"})
        multipart = await c.post("/api/upload", data={"table": "public.api_people"},
                                 files={"file": ("x.csv", GOOD * 20_000, "text/csv")})
    for r in (declared, streamed, multipart):
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "payload_too_large"
    assert files_in(api_settings) == before
    assert broker.depth("import_queue") == 0


async def test_a_header_that_does_not_fit_the_table_is_400_listing_every_problem_and_nothing_is_queued(
        api_client: Any, api_settings: Settings, broker: Any) -> None:
    before = files_in(api_settings)
    async with api_client() as c:
        r = await c.post("/api/upload?table=public.api_people", content=b"id,nick,shoe\n1,a,b\n",
                         headers={"Content-Type": "text/csv"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "bad_upload"
    text = " ".join(error["problems"])
    assert "nick" in text and "shoe" in text and "name" in text
    assert broker.depth("import_queue") == 0
    assert files_in(api_settings) == before


@pytest.mark.parametrize(("url", "kwargs", "status", "code"), [
    ("/api/upload?table=public.secret", {"content": GOOD, "headers": {"Content-Type": "text/csv"}}, 400, "bad_upload"),
    ("/api/upload", {"content": GOOD, "headers": {"Content-Type": "text/csv"}}, 400, "bad_request"),
    ("/api/upload?table=public.api_people&priority=11", {"content": GOOD, "headers": {"Content-Type": "text/csv"}},
     400, "bad_request"),
    ("/api/upload?table=public.api_people&mode=fast", {"content": GOOD, "headers": {"Content-Type": "text/csv"}},
     400, "bad_request"),
    ("/api/upload?table=public.api_people", {"json": {"a": 1}}, 415, "unsupported_media_type"),
    ("/api/upload", {"data": {"table": "public.api_people"}, "files": {"other": ("x.csv", GOOD)}},
     400, "bad_multipart"),
    ("/api/upload", {"content": b"--xx\r\nnonsense", "headers": {"Content-Type": "multipart/form-data; boundary=xx"}},
     400, "bad_multipart"),
])
async def test_bad_upload_requests_get_json_errors(api_client: Any, broker: Any, url: str, kwargs: dict[str, Any],
                                                   status: int, code: str) -> None:
    async with api_client() as c:
        r = await c.post(url, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert broker.depth("import_queue") == 0


async def test_the_same_idempotency_key_returns_the_same_job_and_queues_once(
        api_client: Any, api_settings: Settings, broker: Any) -> None:
    headers = {"Content-Type": "text/csv", "Idempotency-Key": "order-42-upload"}
    async with api_client() as c:
        first = await c.post("/api/upload?table=public.api_people", content=GOOD, headers=headers)
        second = await c.post("/api/upload?table=public.api_people", content=GOOD, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert broker.depth("import_queue") == 1


async def test_upload_writes_pending_state_to_redis(api_client: Any, api_settings: Settings, broker: Any) -> None:
    import redis

    async with api_client() as c:
        r = await c.post("/api/upload?table=public.api_people", content=GOOD, headers={"Content-Type": "text/csv"})
    job_id = r.json()["job_id"]
    client = redis.Redis.from_url(api_settings.redis_url, decode_responses=True)
    try:
        assert client.hget(keys.job_state(api_settings.redis_prefix, job_id), "state") == "PENDING"
    finally:
        client.close()


async def test_upload_while_rabbitmq_is_unreachable_is_503_and_the_job_is_not_left_pending(
        api_client: Any, api_settings: Settings) -> None:
    # A body no other test sends: its checksum finds this request's job, not the newest in a shared database.
    body = GOOD + f"{uuid.uuid4().int % 10**9},Unique,1\n".encode()
    async with api_client(broker_url="amqp://guest:guest@127.0.0.1:1//") as c:
        r = await c.post("/api/upload?table=public.api_people", content=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "broker_unavailable"
    with store.connect(api_settings) as conn:
        state, error = conn.execute("SELECT state, error FROM importd.jobs WHERE checksum = %s",
                                    (f"sha256:{hashlib.sha256(body).hexdigest()}",)).fetchone()  # type: ignore[misc]
    assert state == "FAILURE" and "could not queue" in error


def _upload_kwargs(line: bytes, enc: str | None, delimiter: str | None, multipart: bool) -> dict[str, Any]:
    body = line + b"\n1,Ann,30\n"
    params = {"table": "public.api_people", **({"encoding": enc} if enc else {}),
              **({"delimiter": delimiter} if delimiter else {})}
    if multipart:
        return {"data": params, "files": {"file": ("x.csv", body, "text/csv")}}
    return {"params": params, "content": body, "headers": {"Content-Type": "text/csv"}}


@pytest.mark.parametrize("multipart", [False, True], ids=["raw", "multipart"])
@pytest.mark.parametrize("line", KNOWN_BAD, ids=range(len(KNOWN_BAD)))
async def test_a_header_the_csv_parser_cannot_read_is_a_4xx_naming_the_problem(
        api_client: Any, broker: Any, line: bytes, multipart: bool) -> None:
    """Issue 12 item 6: `"a"b,c`, `"id,name` and every other parser failure of the header
    answer 400 bad_upload with the parser's reason (no 500 internal_error), nothing queued."""
    async with api_client() as c:
        r = await c.post("/api/upload", **_upload_kwargs(line, None, None, multipart))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "bad_upload" and error["problems"]
    assert broker.depth("import_queue") == 0


async def test_any_first_line_is_accepted_or_refused_with_a_json_4xx_never_a_5xx(
        api_client: Any, broker: Any) -> None:
    """Issue 12 item 6, at the depth of the mechanism: whatever the first line's bytes (and
    the encoding and delimiter asked for), an upload answers 202 or a 4xx JSON error."""
    async with api_client() as c:
        def check(line: bytes, enc: str | None, delimiter: str | None, multipart: bool) -> None:
            r = anyio.from_thread.run(lambda: c.post("/api/upload", **_upload_kwargs(line, enc, delimiter, multipart)))
            assert r.status_code == 202 or 400 <= r.status_code < 500, (r.status_code, r.text)
            if r.status_code != 202:
                assert r.json()["error"]["code"], r.text

        run = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))(
            given(line=FIRST_LINES, enc=ENCODINGS, delimiter=DELIMITERS, multipart=st.booleans())(
                example(line=b'"a"b,c', enc=None, delimiter=None, multipart=False)(
                    example(line=b'"id,name', enc=None, delimiter=None, multipart=True)(check))))
        await anyio.to_thread.run_sync(run)


def _count_people(settings: Settings) -> int:
    with store.connect(settings) as conn:
        return int(conn.execute("SELECT count(*) FROM api_people WHERE name = 'Idem'").fetchone()[0])  # type: ignore[index]


async def test_a_retry_with_the_same_idempotency_key_after_a_failed_publish_is_queued_and_runs_once(
        api_client: Any, api_settings: Settings, broker: Any, start_worker: Any) -> None:
    """Issue 12 item 8: a 503 (publish failed) does not use up the Idempotency-Key: with the
    broker back, the same key gets 202, one message is queued and the rows land once."""
    body = HEADER + b"901,Idem,1\n902,Idem,2\n"
    headers = {"Content-Type": "text/csv", "Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    async with api_client(broker_url="amqp://guest:guest@127.0.0.1:1//") as c:  # RabbitMQ unreachable
        failed = await c.post("/api/upload?table=public.api_people", content=body, headers=headers)
    assert failed.status_code == 503, failed.text
    async with api_client() as c:  # the broker is back
        retried = await c.post("/api/upload?table=public.api_people", content=body, headers=headers)
        assert retried.status_code == 202, retried.text
        again = await c.post("/api/upload?table=public.api_people", content=body, headers=headers)
    job_id = retried.json()["job_id"]
    assert again.json()["job_id"] == job_id and again.headers["idempotent-replayed"] == "true"
    assert broker.depth("import_queue") == 1
    with start_worker("-Q", "import_queue", "-c", "1", IMPORTD_TABLES=TABLES, IMPORTD_RATE_LIMIT="none") as worker:
        worker.wait_consuming()
        wait_for(lambda: _job(api_settings, job_id).state == "SUCCESS", timeout=60, what="the retried job ran")
    assert _count_people(api_settings) == 2
    with store.connect(api_settings) as conn:
        assert store.get_job_by_idempotency_key(conn, headers["Idempotency-Key"]).id == job_id  # type: ignore[union-attr]
        [(state, key)] = conn.execute("SELECT state, idempotency_key FROM importd.jobs WHERE id <> %s AND "
                                      "error LIKE 'could not queue%%' AND file_size = %s AND created_at > "
                                      "now() - interval '1 hour' ORDER BY created_at DESC LIMIT 1",
                                      (job_id, len(body))).fetchall()
    assert (state, key) == ("FAILURE", None)  # the failed attempt is kept, without the key


def _job(settings: Settings, job_id: str) -> store.JobRecord:
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None
    return rec


def _multipart(*part_headers: bytes, boundary: bytes = b"xyzzy") -> tuple[bytes, dict[str, str]]:
    """A body with a ``table`` field and a file part carrying ``part_headers`` as extra lines."""
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="table"\r\n\r\npublic.api_people\r\n'
            + b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
            + b"".join(h + b"\r\n" for h in part_headers) + b"Content-Type: text/csv\r\n\r\n" + GOOD
            + b"\r\n--" + boundary + b"--\r\n")
    return body, {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}


@pytest.mark.parametrize(("part_headers", "overrides"), [
    ([b"X-Pad: " + b"a" * 10_000], {}),                                      # one line past the limit
    ([b"X-Pad-%d: " % i + b"a" * 2_500 for i in range(4)], {}),              # lines within it, their sum past it
    ([b"X-Pad-%d: a" % i for i in range(12)], {}),                           # too many lines
    ([b"X-Pad: " + b"a" * 1_100], {"max_part_header_bytes": 1024}),          # the setting lowers the limit
], ids=["long-line", "long-total", "many-lines", "setting"])
async def test_multipart_part_headers_past_the_limit_are_431_and_nothing_is_stored(
        api_client: Any, api_settings: Settings, broker: Any, part_headers: list[bytes],
        overrides: dict[str, Any]) -> None:
    """Issue 12 item 10: the bytes (and lines) of a multipart part's headers are bounded by
    IMPORTD_MAX_PART_HEADER_BYTES: past it the answer is 431 part_headers_too_large, no file
    is kept and nothing is queued; within it the same body is accepted."""
    before = files_in(api_settings)
    body, headers = _multipart(*part_headers)
    async with api_client(**overrides) as c:
        r = await c.post("/api/upload", content=body, headers=headers)
        ok = await c.post("/api/upload", content=_multipart(b"X-Pad: a")[0], headers=headers)
    assert r.status_code == 431, r.text
    assert r.json()["error"]["code"] == "part_headers_too_large"
    assert ok.status_code == 202, ok.text
    assert broker.depth("import_queue") == 1  # only the one within the limit
    assert files_in(api_settings) - before == {f"{ok.json()['job_id']}.csv"}
