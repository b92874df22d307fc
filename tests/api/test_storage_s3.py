"""Many hosts: an API and a worker that share no directory, both on an s3:// upload store."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from importd.config import Settings
from importd.imports import storage, store
from tests.api.conftest import HEADER, TABLES
from tests.support.infra import wait_for
from tests.support.s3 import S3Server, aws_env, s3_server  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


def rows_named(settings: Settings, name: str) -> int:
    with store.connect(settings) as conn:
        row = conn.execute("SELECT count(*) FROM api_people WHERE name = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def job(settings: Settings, job_id: str) -> store.JobRecord:
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None
    return rec


@pytest.mark.parametrize("form", ["raw", "multipart"])
async def test_an_upload_through_s3_imports_on_a_worker_that_shares_no_directory_with_the_api(
        api_client: Any, api_settings: Settings, start_worker: Any, broker: Any, s3_server: S3Server,  # noqa: F811
        tmp_path: Path, form: str) -> None:
    prefix = f"e2e-{uuid.uuid4().hex[:8]}/uploads"
    api_dir, worker_dir = tmp_path / "api-host", tmp_path / "worker-host"
    worker_dir.mkdir()
    name = f"s3-{uuid.uuid4().hex[:8]}"
    count = 30_000  # ~0.9 MB: many 64 KiB batches, so many ranged reads, in two COPY streams
    body = HEADER + b"".join(b"%d,%s,%d\n" % (i, name.encode(), i % 90) for i in range(count))
    shared = {"storage_url": s3_server.url(prefix), "s3_endpoint_url": s3_server.endpoint}
    async with api_client(upload_dir=api_dir, **shared) as c:
        if form == "raw":
            r = await c.post("/api/upload?table=public.api_people&mode=resumable", content=body,
                             headers={"Content-Type": "text/csv"})
        else:
            r = await c.post("/api/upload", files={"file": ("a.csv", body, "text/csv")},
                             data={"table": "public.api_people", "mode": "resumable"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    rec = job(api_settings, job_id)
    assert not os.path.isabs(rec.file_path or "/") and rec.file_size == len(body)
    assert s3_server.store(prefix).keys() == [rec.file_path]
    assert not api_dir.exists() or list(api_dir.iterdir()) == []  # nothing kept on the API's host
    env = {"IMPORTD_UPLOAD_DIR": str(worker_dir), "IMPORTD_STORAGE_URL": shared["storage_url"],
           "IMPORTD_S3_ENDPOINT_URL": shared["s3_endpoint_url"], "IMPORTD_TABLES": TABLES,
           "IMPORTD_RATE_LIMIT": "none", "IMPORTD_IMPORT_BATCH_BYTES": "65536", **aws_env()}
    with start_worker("-Q", "import_queue", "-c", "1", **env) as worker:
        worker.wait_consuming()
        wait_for(lambda: job(api_settings, job_id).state in ("SUCCESS", "FAILURE"), timeout=120,
                 what="the job finished")
    done = job(api_settings, job_id)
    assert (done.state, done.error, done.rows_imported) == ("SUCCESS", None, count), worker.output()
    assert rows_named(api_settings, name) == count  # every row once
    assert list(worker_dir.iterdir()) == []  # the worker read the object, never a local copy
    assert s3_server.store(prefix).open_multiparts() == []


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1024 * 1024):
        yield body[start:start + 1024 * 1024]


async def test_an_upload_too_large_for_s3_leaves_no_object(
        api_client: Any, s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    prefix = f"big-{uuid.uuid4().hex[:8]}"
    body = HEADER + b"1,a,2\n" * (3 * storage.PART_BYTES // 6)
    async with api_client(upload_dir=tmp_path, storage_url=s3_server.url(prefix),
                          s3_endpoint_url=s3_server.endpoint, max_upload_bytes=2 * storage.PART_BYTES) as c:
        r = await c.post("/api/upload?table=public.api_people", content=chunks(body),  # no Content-Length
                         headers={"Content-Type": "text/csv"})
    assert r.status_code == 413, r.text  # found while streaming, after parts went to the store
    assert (s3_server.store(prefix).keys(), s3_server.store(prefix).open_multiparts()) == ([], [])


async def test_a_multipart_upload_cut_midway_leaves_no_object_and_no_open_upload(
        api_client: Any, s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    prefix = f"cut-{uuid.uuid4().hex[:8]}"
    body = (b'--b\r\nContent-Disposition: form-data; name="table"\r\n\r\npublic.api_people\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
            + HEADER + b"1,a,2\n" * (2 * storage.PART_BYTES // 6))  # no closing boundary: cut
    async with api_client(upload_dir=tmp_path, storage_url=s3_server.url(prefix),
                          s3_endpoint_url=s3_server.endpoint) as c:
        r = await c.post("/api/upload", content=chunks(body),
                         headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400, r.text
    assert (s3_server.store(prefix).keys(), s3_server.store(prefix).open_multiparts()) == ([], [])


@pytest.mark.parametrize("form", ["raw", "multipart"])
async def test_an_upload_refused_for_its_header_leaves_no_object(
        api_client: Any, s3_server: S3Server, tmp_path: Path, form: str) -> None:  # noqa: F811
    prefix = f"refused-{uuid.uuid4().hex[:8]}"
    bad = b"id,shoe\n1,2\n"
    async with api_client(upload_dir=tmp_path, storage_url=s3_server.url(prefix),
                          s3_endpoint_url=s3_server.endpoint) as c:
        if form == "raw":
            r = await c.post("/api/upload?table=public.api_people", content=bad, headers={"Content-Type": "text/csv"})
        else:
            r = await c.post("/api/upload", files={"file": ("a.csv", bad, "text/csv")},
                             data={"table": "public.api_people"})
    assert r.status_code == 400 and "shoe" in r.text
    assert s3_server.store(prefix).keys() == []


@pytest.mark.slow
@pytest.mark.anyio(False)
@pytest.mark.parametrize("send", ["raw", "multipart"])
def test_a_1gb_upload_into_s3_keeps_the_api_rss_within_the_same_bound(
        start_api: Any, api_settings: Settings, broker: Any, s3_server: S3Server, send: str) -> None:  # noqa: F811
    """The bound of tests/api/test_memory.py, with the upload streamed into S3 parts."""
    import httpx

    from tests.api.test_memory import (
        MAX_GROWTH_KB,
        UPLOAD_BYTES,
        RssSampler,
        send_multipart,
        send_raw,
        settled_rss_kb,
    )

    prefix = f"rss-{uuid.uuid4().hex[:8]}"
    env = {"IMPORTD_STORAGE_URL": s3_server.url(prefix), "IMPORTD_S3_ENDPOINT_URL": s3_server.endpoint, **aws_env()}
    with start_api(env=env, max_upload_bytes=2 * UPLOAD_BYTES) as api:
        with httpx.Client(base_url=api.url, timeout=600) as c:
            warm = c.post("/api/upload?table=public.api_people", content=HEADER + b"1,a,2\n" * 400_000,
                          headers={"Content-Type": "text/csv"})  # loads boto3, connects
            assert warm.status_code == 202, warm.text
            idle_kb = settled_rss_kb(api)  # a condition, not a fixed sleep
            sampler = RssSampler(api)
            sampler.start()
            r = (send_raw if send == "raw" else send_multipart)(c)
            sampled_during, alive_at_response = sampler.samples, sampler.is_alive()
            sampler.running = False
            sampler.join()
    # The peak covers the whole upload: the sampler was still sampling when the response came.
    assert alive_at_response and sampler.failed is None and sampled_during >= 2, (
        alive_at_response, sampler.failed, sampled_during)
    assert r.status_code == 202, r.text
    upload = s3_server.store(prefix)
    assert upload.size(f"{r.json()['job_id']}.csv") == UPLOAD_BYTES
    for key in upload.keys():
        upload.delete(key)  # the server holds objects in memory
    broker.purge_all()
    growth_kb = sampler.peak_kb - idle_kb
    assert growth_kb < MAX_GROWTH_KB, f"RSS grew {growth_kb} kB over idle {idle_kb} kB"


@pytest.mark.anyio(False)
def test_importd_submit_streams_a_file_into_s3_and_the_message_names_the_object(
        api_settings: Settings, broker: Any, s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    import hashlib
    import json

    from tests.support.cli import run_cli

    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    source = tmp_path / "people.csv"
    source.write_bytes(HEADER + b"1,a,2\n" * (storage.PART_BYTES // 6 + 10))  # more than one part
    out = run_cli(api_settings, "submit", str(source), "--table", "public.api_people",
                  IMPORTD_TABLES=TABLES, IMPORTD_UPLOAD_DIR=str(tmp_path / "cli-host"),
                  IMPORTD_STORAGE_URL=s3_server.url(prefix), IMPORTD_S3_ENDPOINT_URL=s3_server.endpoint, **aws_env())
    assert out.returncode == 0, out.stderr
    [msg] = broker.get_all("import_queue")
    args = json.loads(msg.body)["args"]
    assert "file" not in args
    assert args["object"] == {"key": f"{json.loads(msg.body)['job_id']}.csv", "size": source.stat().st_size,
                              "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    assert s3_server.store(prefix).keys() == [args["object"]["key"]]
    assert not (tmp_path / "cli-host").exists()
