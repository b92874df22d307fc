"""``GET /api/jobs/{id}/rejects.csv`` and the grouped errors in a finished job's JSON."""

from __future__ import annotations

import io
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from importd.config import Settings
from importd.imports import storage
from importd.imports.handlers import run_import_task
from tests.api.conftest import HEADER
from tests.support.importing import context, run_import
from tests.support.s3 import S3Server, s3_server  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


async def test_a_finished_job_gives_its_rejected_records_back_as_the_original_lines_and_its_errors_grouped(
        api_client: Any, api_settings: Settings) -> None:
    bad = [b'3,"Cid\nTwo lines",notanumber\r\n', b"5,,9\r\n", b"6,Fay,1.5\r\n"]
    data = HEADER.replace(b"\n", b"\r\n") + b"1,Ann,30\r\n" + bad[0] + b"4,Dee,40\r\n" + bad[1] + bad[2]
    rec, raised = run_import(api_settings, data, table="api_people", max_errors=10)
    assert raised is None and rec.state == "SUCCESS"
    async with api_client() as client:
        job = (await client.get(f"/api/jobs/{rec.id}")).json()
        csv = await client.get(f"/api/jobs/{rec.id}/rejects.csv")
        missing = await client.get("/api/jobs/nosuchjob/rejects.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.content == b"id,name,age\r\n" + b"".join(bad)
    assert job["rejects"]["records"] == 3 and job["rejects"]["file"].endswith("/rejects.csv")
    groups = {(g["column"], g["reason"]): (g["count"], g["lines"]) for g in job["rejects"]["groups"]}
    assert groups[("age", "invalid input syntax for type integer")] == (2, [3, 7])
    assert sum(count for count, _ in groups.values()) == 3
    assert missing.status_code == 404


async def test_an_s3_jobs_reject_file_is_written_to_the_store_and_served_by_an_api_on_another_host(
        api_client: Any, api_settings: Settings, s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    """The worker writes the rejects beside the upload in S3 (nothing on its own disk); the
    API, sharing no directory with it, streams them from the store."""
    prefix = f"rejects-{uuid.uuid4().hex[:8]}"
    shared = {"storage_url": s3_server.url(prefix), "s3_endpoint_url": s3_server.endpoint}
    worker_dir, api_dir = tmp_path / "worker-host", tmp_path / "api-host"
    worker_dir.mkdir()
    worker = replace(api_settings, upload_dir=worker_dir, **shared)
    name = f"r-{uuid.uuid4().hex[:8]}".encode()
    bad = [b"2,%s,x\n" % name, b'4,"%s\ntwo lines",-5\n' % name]
    data = HEADER + b"1,%s,30\n" % name + bad[0] + b"3,%s,4\n" % name + bad[1]
    job_id = uuid.uuid4().hex
    obj = storage.from_settings(worker).write(f"{job_id}.csv", io.BytesIO(data))
    run_import_task(context(worker, job_id, {"object": obj.as_args(), "table": "api_people", "max_errors": 5}))
    assert list(worker_dir.iterdir()) == []
    (reject_key,) = s3_server.store(prefix).keys(storage.rejects_folder(job_id))
    async with api_client(upload_dir=api_dir, **shared) as client:
        job = (await client.get(f"/api/jobs/{job_id}")).json()
        csv = await client.get(f"/api/jobs/{job_id}/rejects.csv")
        s3_server.store(prefix).delete(reject_key)
        gone = await client.get(f"/api/jobs/{job_id}/rejects.csv")
    assert (job["state"], job["rows_imported"], job["rejects"]["records"]) == ("SUCCESS", 2, 2)
    assert csv.status_code == 200 and csv.content == HEADER + b"".join(bad)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "no_rejects"


async def test_a_clean_job_has_no_reject_file_and_says_so(api_client: Any, api_settings: Settings) -> None:
    rec, raised = run_import(api_settings, HEADER + b"1,Ann,30\n", table="api_people")
    assert raised is None and rec.state == "SUCCESS"
    async with api_client() as client:
        job = (await client.get(f"/api/jobs/{rec.id}")).json()
        csv = await client.get(f"/api/jobs/{rec.id}/rejects.csv")
    assert job["rejects"]["records"] == 0 and job["rejects"]["groups"] == []
    assert csv.status_code == 404
