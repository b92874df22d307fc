"""``GET /api/jobs/{id}/rejects.csv`` and the grouped errors in a finished job's JSON."""

from __future__ import annotations

from typing import Any

import pytest

from importd.config import Settings
from tests.api.conftest import HEADER
from tests.support.importing import run_import

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
