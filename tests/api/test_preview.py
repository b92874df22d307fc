"""``POST /api/preview`` and ``/api/mappings``: the head of a file checked against the table
before anything is queued, and mappings the user confirmed remembered per (table, header)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from importd.config import Settings
from importd.imports import preview, store
from tests.support.proxy import Proxy
from tests.support.s3 import S3Server, s3_server  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio

#: After this many seconds the stalled store answers again, so a blocked event loop fails the
#: test instead of hanging it.
STALL_SAFETY_S = 15.0
WB_TABLE = "public.wb_orders"
WB_DDL = ("CREATE TABLE IF NOT EXISTS wb_orders (id bigint NOT NULL, email text NOT NULL, amount numeric(10,2),"
          " created_at timestamptz, code varchar(3))")
MESSY = (b"ID,E-mail,Amount,Created At,code\n"
         b"1,ann@example.com,12.50,2024-05-01 10:00:00+00,abc\n"
         b"2,,1.204,2024-05-02,de\n"          # email empty: NULL in a NOT NULL column
         b"3,cid@example.com,\"1,204\",2024-13-45,toolong\n"  # numeric with comma, bad date, too long
         b"4,dee@example.com,7\n")            # a field short


@pytest.fixture
def wb_settings(api_settings: Settings) -> Settings:
    with store.connect(api_settings) as conn:
        conn.execute(WB_DDL)
    return api_settings


async def _preview(client: Any, body: bytes, **params: str) -> Any:
    return await client.post("/api/preview", params={"table": WB_TABLE, **params}, content=body,
                             headers={"Content-Type": "text/csv"})


async def test_preview_flags_each_bad_cell_with_the_reason_postgresql_gives_and_suggests_near_miss_columns(
        api_client: Any, wb_settings: Settings) -> None:
    async with api_client(tables=WB_TABLE) as client:
        r = await _preview(client, MESSY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["delimiter"] == "," and body["encoding"] == "utf-8" and body["complete"] is True
    fields = {f["header"]: (f["column"], f["how"]) for f in body["mapping"]["fields"]}
    assert fields == {"ID": ("id", "auto"), "E-mail": ("email", "suggested"), "Amount": ("amount", "auto"),
                      "Created At": ("created_at", "suggested"), "code": ("code", "auto")}
    assert body["mapping"]["columns"] == {"E-mail": "email", "Created At": "created_at"}
    assert [r["line"] for r in body["rows"]] == [2, 3, 4, 5]
    errors = [[c["error"] for c in row["cells"]] for row in body["rows"]]
    assert errors[0] == [None] * 5
    assert "not-null" in (errors[1][1] or "") and errors[1][0] is None
    assert "numeric" in (errors[2][2] or "") and "date/time" in (errors[2][3] or "")
    assert "too long" in (errors[2][4] or "")
    assert body["rows"][3]["error"] == 'missing data for column "created_at"'
    assert body["bad_rows"] == 3


async def test_preview_of_an_unknown_table_or_a_non_csv_head_is_400_and_stores_nothing(
        api_client: Any, wb_settings: Settings) -> None:
    async with api_client(tables=WB_TABLE) as client:
        assert (await _preview(client, MESSY, table="public.nope")).status_code == 400
        bad = await _preview(client, b'a,"b\n1,2\n' + b"x" * 10)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_upload"
        assert (await _preview(client, MESSY, columns="[1]")).status_code == 400


async def test_a_saved_mapping_maps_the_next_file_with_the_same_header_at_once(
        api_client: Any, wb_settings: Settings) -> None:
    header = ["ID", "E-mail", "Amount", "Created At", "code"]
    async with api_client(tables=WB_TABLE) as client:
        put = await client.put("/api/mappings", json={"table": "wb_orders", "header": header,
                                                      "columns": {"E-mail": "email", "Created At": "created_at"}})
        assert put.status_code == 200, put.text
        listed = (await client.get("/api/mappings", params={"table": WB_TABLE})).json()["mappings"]
        body = (await _preview(client, MESSY.replace(b"ID,E-mail", b" id ,e-mail"))).json()
    assert any(m["header"] == header for m in listed)
    assert body["mapping_source"] == "saved"
    assert {f["header"]: f["how"] for f in body["mapping"]["fields"]}["e-mail"] == "explicit"
    assert body["problems"] == []


async def test_preview_takes_a_multipart_file_and_a_windows_1252_file_is_detected(
        api_client: Any, wb_settings: Settings) -> None:
    data = MESSY.replace(b"ann@", "änn@".encode("cp1252"))
    async with api_client(tables=WB_TABLE) as client:
        r = await client.post("/api/preview", files={"file": ("x.csv", data, "text/csv")},
                              data={"table": WB_TABLE, "columns": json.dumps({"E-mail": "email"})})
    assert r.status_code == 200, r.text
    assert r.json()["encoding"] == "cp1252" and r.json()["encoding_detected"] is True
    assert r.json()["rows"][0]["cells"][1]["value"] == "änn@example.com"


class CountingFile:
    """A file that counts the bytes read from it."""

    def __init__(self, path: Path) -> None:
        self.f = path.open("rb")
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.read_bytes += len(data)
        return data


def test_preview_of_a_1_gb_file_reads_a_bounded_head_only(wb_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    rows = b"".join(b"%d,p%d@example.com,%d.00,2024-05-01,abc\n" % (i, i, i) for i in range(100_000))
    with path.open("wb") as f:
        f.write(b"id,email,amount,created_at,code\n" + rows)
        f.truncate(1024 ** 3)  # sparse: 1 GiB on the file system, a few MB on disk
    counting = CountingFile(path)
    with store.connect(wb_settings) as conn:
        body = preview.preview_file(conn, _allow(wb_settings), counting, WB_TABLE, {})  # type: ignore[arg-type]
    assert counting.read_bytes <= preview.HEAD_BYTES + 1
    assert body["bytes_read"] == preview.HEAD_BYTES and body["complete"] is False
    assert body["rows_shown"] == preview.DEFAULT_ROWS and body["bad_rows"] == 0


async def test_the_api_stops_reading_a_raw_body_after_the_head(api_client: Any, wb_settings: Settings) -> None:
    sent = [0]
    chunk = b"".join(b"%d,p@example.com,1.00,2024-05-01,abc\n" % i for i in range(2000))

    def body() -> Iterator[bytes]:
        yield b"id,email,amount,created_at,code\n"
        for _ in range(100_000):  # ~7 GB if it were all read
            sent[0] += len(chunk)
            yield chunk

    async def stream() -> Any:
        for part in body():
            yield part

    async with api_client(tables=WB_TABLE) as client:
        r = await client.post("/api/preview", params={"table": WB_TABLE}, content=stream(),
                              headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["bytes_read"] == preview.HEAD_BYTES
    assert sent[0] <= preview.HEAD_BYTES + 2 * len(chunk)


def _allow(settings: Settings) -> Settings:
    from dataclasses import replace
    return replace(settings, tables=WB_TABLE)


async def test_previewing_a_stored_s3_job_does_not_stall_other_requests(
        api_client: Any, s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    """The preview's S3 read waits off the event loop: while the store does not answer, the
    API still serves other requests. The previewing API reaches the store through a proxy
    that stalls its traffic; the upload went through another API straight to the store."""
    prefix = f"preview-{uuid.uuid4().hex[:8]}"
    body = b"id,name,age\n" + b"".join(b"%d,stalled,%d\n" % (i, i % 90) for i in range(50))
    async with api_client(upload_dir=tmp_path / "api", storage_url=s3_server.url(prefix),
                          s3_endpoint_url=s3_server.endpoint) as c:
        r = await c.post("/api/upload?table=public.api_people", content=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    with Proxy("127.0.0.1", s3_server.port) as proxy:
        async with api_client(upload_dir=tmp_path / "api", storage_url=s3_server.url(prefix),
                              s3_endpoint_url=f"http://127.0.0.1:{proxy.port}") as c:
            proxy.stall()
            safety = threading.Timer(STALL_SAFETY_S, proxy.resume)  # a blocked loop fails, not hangs
            safety.start()
            try:
                previewing = asyncio.ensure_future(c.post(f"/api/preview?job_id={r.json()['job_id']}"))
                while proxy.accepted == 0 and not previewing.done():
                    await asyncio.sleep(0.01)  # until the preview's request to the store is on its way
                health = await c.get("/healthz")
                served_during_stall = proxy.stalled and not previewing.done()
                proxy.resume()
                answer = await previewing
            finally:
                safety.cancel()
    assert health.status_code == 200
    assert served_during_stall
    assert answer.status_code == 200, answer.text
    assert "stalled" in answer.text
