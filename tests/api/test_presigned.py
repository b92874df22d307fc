"""Presigned multipart uploads: the client PUTs parts straight to the S3 store, then completes."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from importd.config import Settings
from importd.imports import storage, store
from tests.api.conftest import HEADER
from tests.support.s3 import S3Server, s3_server  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


def csv_of(size: int) -> bytes:
    """A valid api_people CSV of about ``size`` bytes."""
    rows = b"".join(b"%d,name %d,%d\n" % (i, i, i % 90) for i in range(size // 14 + 1))
    data = HEADER + rows
    cut = data.rindex(b"\n", 0, size) + 1
    return data[:cut]


def split(data: bytes, part: int) -> list[bytes]:
    return [data[i:i + part] for i in range(0, len(data), part)]


@pytest.fixture
def s3_overrides(s3_server: S3Server, tmp_path: Path) -> dict[str, Any]:  # noqa: F811
    return {"upload_dir": tmp_path, "storage_url": s3_server.url(f"pre-{uuid.uuid4().hex[:8]}"),
            "s3_endpoint_url": s3_server.endpoint}


async def test_parts_go_straight_to_the_store_a_dropped_part_is_resent_and_complete_queues_the_job(
        api_client: Any, api_settings: Settings, broker: Any, s3_overrides: dict[str, Any]) -> None:
    data = csv_of(2 * storage.PART_BYTES + 1000)
    async with api_client(**s3_overrides) as c:
        r = await c.post("/api/uploads", json={"size": len(data)})
        assert r.status_code == 201, r.text
        started = r.json()
        upload_id, chunks = started["upload_id"], split(data, started["part_bytes"])
        assert [p["number"] for p in started["parts"]] == [1, 2, 3] == list(range(1, len(chunks) + 1))
        with httpx.Client() as direct:  # straight to the store, not through the API
            for part in started["parts"]:
                if part["number"] != 2:  # part 2's connection "dropped"
                    assert direct.put(part["url"], content=chunks[part["number"] - 1]).status_code == 200
            early = await c.post(f"/api/uploads/{upload_id}/complete",
                                 json={"size": len(data), "table": "public.api_people"})
            assert early.status_code == 400 and early.json()["error"]["missing"] == [2]
            status = (await c.get(f"/api/uploads/{upload_id}", params={"size": len(data)})).json()
            assert [p["number"] for p in status["received"]] == [1, 3]
            assert [p["number"] for p in status["missing"]] == [2]
            for part in status["missing"]:  # only the missing part is sent again
                assert direct.put(part["url"], content=chunks[part["number"] - 1]).status_code == 200
        done = await c.post(f"/api/uploads/{upload_id}/complete",
                            json={"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                  "table": "public.api_people", "mode": "resumable", "priority": 4})
        assert done.status_code == 202, done.text
        again = await c.post(f"/api/uploads/{upload_id}/complete",
                             json={"size": len(data), "table": "public.api_people"})
    assert done.json()["job_id"] == upload_id == again.json()["job_id"]
    assert again.headers.get("idempotent-replayed") == "true"
    with store.connect(api_settings) as conn:
        rec = store.get_job(conn, upload_id)
    assert rec is not None and (rec.state, rec.mode, rec.priority) == ("PENDING", "resumable", 4)
    assert (rec.file_path, rec.file_size, rec.checksum) == (
        f"{upload_id}.csv", len(data), "sha256:" + hashlib.sha256(data).hexdigest())
    [msg] = broker.get_all("import_queue")
    assert json.loads(msg.body)["args"]["object"] == {"key": f"{upload_id}.csv", "size": len(data),
                                                      "sha256": hashlib.sha256(data).hexdigest()}
    upload = storage.open_url(s3_overrides["storage_url"], s3_overrides["s3_endpoint_url"])
    assert upload.open_multiparts() == []


async def test_a_wrong_checksum_deletes_the_object_and_queues_nothing(
        api_client: Any, broker: Any, s3_overrides: dict[str, Any]) -> None:
    data = csv_of(1000)
    async with api_client(**s3_overrides) as c:
        started = (await c.post("/api/uploads", json={"size": len(data)})).json()
        httpx.put(started["parts"][0]["url"], content=data).raise_for_status()
        r = await c.post(f"/api/uploads/{started['upload_id']}/complete",
                         json={"size": len(data), "sha256": "0" * 64, "table": "public.api_people"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "checksum_mismatch"
    upload = storage.open_url(s3_overrides["storage_url"], s3_overrides["s3_endpoint_url"])
    assert (upload.keys(), upload.open_multiparts()) == ([], [])
    assert broker.depth("import_queue") == 0


def composite(data: bytes, part: int) -> str:
    """What the page sends: the sha256 of the parts' sha256 digests (crypto.subtle, part by part)."""
    return hashlib.sha256(b"".join(hashlib.sha256(c).digest() for c in split(data, part))).hexdigest()


async def test_complete_checks_the_composite_sha256_of_the_parts_and_a_wrong_one_deletes_the_object(
        api_client: Any, api_settings: Settings, broker: Any, s3_overrides: dict[str, Any]) -> None:
    data = csv_of(storage.PART_BYTES + 5000)
    upload = storage.open_url(s3_overrides["storage_url"], s3_overrides["s3_endpoint_url"])
    async with api_client(**s3_overrides) as c:
        ids = []
        for _ in range(2):
            started = (await c.post("/api/uploads", json={"size": len(data)})).json()
            chunks = split(data, started["part_bytes"])
            for part in started["parts"]:
                httpx.put(part["url"], content=chunks[part["number"] - 1]).raise_for_status()
            ids.append(started["upload_id"])
        right = composite(data, storage.PART_BYTES)
        wrong = composite(data[:-1] + b"x", storage.PART_BYTES)
        refused = await c.post(f"/api/uploads/{ids[0]}/complete",
                               json={"size": len(data), "composite_sha256": wrong, "table": "public.api_people"})
        assert upload.keys() == []  # the refused object is gone; the other is not completed yet
        done = await c.post(f"/api/uploads/{ids[1]}/complete",
                            json={"size": len(data), "composite_sha256": right.upper(), "table": "public.api_people"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "checksum_mismatch"
    assert refused.json()["error"]["composite_sha256"] == right
    assert done.status_code == 202, done.text
    assert upload.keys() == [f"{ids[1]}.csv"]
    assert broker.depth("import_queue") == 1
    with store.connect(api_settings) as conn:
        assert store.get_job(conn, ids[0]) is None


async def test_aborting_an_upload_removes_its_parts_and_a_second_abort_is_404(
        api_client: Any, broker: Any, s3_overrides: dict[str, Any]) -> None:
    data = csv_of(1000)
    upload = storage.open_url(s3_overrides["storage_url"], s3_overrides["s3_endpoint_url"])
    async with api_client(**s3_overrides) as c:
        started = (await c.post("/api/uploads", json={"size": len(data)})).json()
        httpx.put(started["parts"][0]["url"], content=data).raise_for_status()
        assert len(upload.open_multiparts()) == 1
        first = await c.delete(f"/api/uploads/{started['upload_id']}")
        second = await c.delete(f"/api/uploads/{started['upload_id']}")
        late = await c.post(f"/api/uploads/{started['upload_id']}/complete",
                            json={"size": len(data), "table": "public.api_people"})
    assert (first.status_code, second.status_code, late.status_code) == (204, 404, 404)
    assert (upload.keys(), upload.open_multiparts()) == ([], [])
    assert broker.depth("import_queue") == 0


async def test_a_file_store_has_no_presigned_uploads(api_client: Any) -> None:
    async with api_client() as c:
        r = await c.post("/api/uploads", json={"size": 10})
        aborted = await c.delete(f"/api/uploads/{uuid.uuid4().hex}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_presigned_uploads"
    assert aborted.status_code == 409
