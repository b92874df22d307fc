"""Through the API with a real worker: cancel a queued job, cancel a running one, follow SSE."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from importd.config import Settings
from importd.imports import store
from tests.api.conftest import HEADER, TABLES
from tests.support.infra import wait_for

WORKER_ENV = {"IMPORTD_TABLES": TABLES, "IMPORTD_RATE_LIMIT": "none"}


def count(settings: Settings) -> int:
    with store.connect(settings) as conn:
        return int(conn.execute("SELECT count(*) FROM api_people").fetchone()[0])  # type: ignore[index]


def state(settings: Settings, job_id: str) -> str:
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None
    return rec.state


def events(c: httpx.Client, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with c.stream("GET", f"/api/jobs/{job_id}/events") as r:
        name = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                yield name, json.loads(line[6:])


def test_a_queued_job_cancelled_through_the_api_is_skipped_by_the_worker(
        start_api: Any, start_worker: Any, api_settings: Settings, broker: Any) -> None:
    before = count(api_settings)
    with start_api() as api, httpx.Client(base_url=api.url, timeout=30) as c:
        r = c.post("/api/upload?table=public.api_people", content=HEADER + b"1,Ann,3\n",
                   headers={"Content-Type": "text/csv"})
        job_id = r.json()["job_id"]
        assert c.post(f"/api/jobs/{job_id}/cancel").json()["state"] == "CANCELLED"
        with start_worker("-Q", "import_queue", "-c", "1", **WORKER_ENV) as worker:
            worker.wait_consuming()
            wait_for(lambda: broker.depth("import_queue") == 0, timeout=30, what="the job consumed")
            wait_for(lambda: f'"{job_id}"' in worker.output(), timeout=30, what="the worker saw the job")
        assert [e for e in events(c, job_id)][-1][1]["state"] == "CANCELLED"
    assert state(api_settings, job_id) == "CANCELLED"
    assert count(api_settings) == before


@pytest.mark.slow
def test_a_running_import_cancelled_through_the_api_stops_between_batches_and_rolls_back(
        start_api: Any, start_worker: Any, api_settings: Settings, broker: Any) -> None:
    before = count(api_settings)
    body = HEADER + b"".join(b"%d,Person number %d,%d\n" % (i, i, i % 90) for i in range(400_000))
    with start_worker("-Q", "import_queue", "-c", "1", IMPORTD_IMPORT_BATCH_BYTES="65536", **WORKER_ENV) as worker, \
            start_api() as api, httpx.Client(base_url=api.url, timeout=60) as c:
        worker.wait_consuming()
        r = c.post("/api/upload?table=public.api_people", content=body, headers={"Content-Type": "text/csv"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        seen: list[tuple[str, dict[str, Any]]] = []
        for name, data in events(c, job_id):
            seen.append((name, data))
            if name == "progress" and int(data.get("rows") or 0) > 0 and len(seen) < 1000:
                if not any(n == "cancel" for n, _ in seen):
                    assert c.post(f"/api/jobs/{job_id}/cancel").status_code == 202
                    seen.append(("cancel", {}))
    final = seen[-1]
    assert final[0] == "final" and final[1]["state"] == "CANCELLED", final
    assert state(api_settings, job_id) == "CANCELLED"
    assert count(api_settings) == before  # atomic: the batches already sent were rolled back
