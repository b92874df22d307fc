"""Hostile HTTP against a real uvicorn process: correct 4xx, never a 5xx, nothing written
outside the upload directory, and the target table untouched by anything a request says.

Protection proved: server-chosen upload names (a client file name is never a path), the
allowlist and ``sql.Identifier`` quoting (nothing from a request reaches SQL as text), the
streaming size limit, the multipart parser's errors mapped to 400, bearer auth on every
``/api`` route, and the JSON error middleware (no traceback, no 500 on bad input).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from importd.config import Settings
from tests.api.conftest import HEADER
from tests.support import report

pytestmark = pytest.mark.anyio

TOKEN = "hostile-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = HEADER + b"1,ann,30\n"
UPLOAD = "/api/upload?table=public.api_people"


def _files_outside(settings: Settings) -> set[str]:
    """Every file under the upload directory's parent that is not inside the upload directory
    (the API process's own log, written there by the fixture, aside)."""
    root, uploads = settings.upload_dir.parent, settings.upload_dir.resolve()
    found = set()
    for dirpath, _, names in os.walk(root):
        if Path(dirpath).resolve().is_relative_to(uploads):
            continue
        found.update(str(Path(dirpath) / n) for n in names if not (n.startswith("api-") and n.endswith(".log")))
    return found


def _hostile_requests() -> list[tuple[str, str, dict[str, Any], set[int]]]:
    """(method, url, httpx kwargs, acceptable statuses)."""
    evil_names = ["../../evil.csv", "/tmp/evil.csv", "..\\..\\evil.csv", "evil\x00.csv", "a" * 5000 + ".csv"]
    reqs: list[tuple[str, str, dict[str, Any], set[int]]] = []
    for name in evil_names:
        reqs.append(("POST", "/api/upload", {"data": {"table": "public.api_people"},
                                             "files": {"file": (name, GOOD, "text/csv")}, "headers": AUTH},
                     {202, 400}))
    sql_header = b'id,name,"age); DROP TABLE api_people; --"\n1,a,2\n'
    reqs += [
        ("POST", UPLOAD, {"content": sql_header, "headers": {**AUTH, "Content-Type": "text/csv"}}, {400}),
        ("POST", "/api/upload?table=public.api_people;DROP%20TABLE%20api_people", {
            "content": GOOD, "headers": {**AUTH, "Content-Type": "text/csv"}}, {400}),
        ("POST", "/api/upload?table=%22api_people%22%20--", {
            "content": GOOD, "headers": {**AUTH, "Content-Type": "text/csv"}}, {400}),
        ("POST", UPLOAD, {"content": b"x" * 70_000, "headers": {**AUTH, "Content-Type": "text/csv"}}, {413}),
        ("POST", "/api/upload", {"content": b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                                            b"filename=\"a.csv\"\r\n\r\nid,na",
                                 "headers": {**AUTH, "Content-Type": "multipart/form-data; boundary=b"}}, {400}),
        ("POST", "/api/upload", {"content": b"garbage", "headers": {**AUTH, "Content-Type": "multipart/form-data"}},
         {400}),
        ("POST", UPLOAD, {"json": {"rows": [1, 2]}, "headers": AUTH}, {415}),
        ("POST", UPLOAD, {"content": GOOD, "headers": {**AUTH, "Content-Type": "application/xml"}}, {415}),
        ("POST", UPLOAD, {"content": GOOD, "headers": {"Content-Type": "text/csv"}}, {401}),
        ("POST", UPLOAD, {"content": GOOD, "headers": {"Authorization": "Bearer wrong", "Content-Type": "text/csv"}},
         {401}),
        ("GET", "/api/jobs", {"headers": {"Authorization": "Basic Zm9vOmJhcg=="}}, {401}),
        ("GET", "/api/jobs/..%2F..%2Fetc%2Fpasswd", {"headers": AUTH}, {400, 404}),
        ("GET", "/api/jobs/' OR 1=1 --/errors", {"headers": AUTH}, {400, 404}),
        ("GET", "/api/jobs?state=SUCCESS'--&limit=-5", {"headers": AUTH}, {400}),
        ("GET", "/api/jobs?cursor=%00%ff", {"headers": AUTH}, {400}),
        ("POST", "/api/jobs/nope/cancel", {"headers": AUTH}, {400, 404}),
        ("GET", "/api/jobs/nope/events", {"headers": {**AUTH, "Last-Event-ID": "'; DROP"}}, {400, 404}),
    ]
    return reqs


#: Rows the table holds during the test, so that an UPDATE, DELETE or TRUNCATE a request
#: smuggled in would change the digest (on an empty table only an INSERT or a DROP would show).
SENTINELS = [(-(i + 1), f"hostile-sentinel-{i}", i) for i in range(3)]


@pytest.fixture
def sentinels(api_settings: Settings) -> Iterator[None]:
    with psycopg.connect(api_settings.database_url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO public.api_people (id, name, age) VALUES (%s, %s, %s)", SENTINELS)
    yield
    with psycopg.connect(api_settings.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM public.api_people WHERE name LIKE 'hostile-sentinel-%'")


def _table_digest(settings: Settings) -> tuple[int, str | None]:
    """Row count and a digest of every row of public.api_people (fails if the table is gone)."""
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text))"
                           " FROM public.api_people t").fetchone()
    assert row is not None
    return int(row[0]), row[1]


async def test_hostile_requests_and_a_thousand_concurrent_ones_get_4xx_never_5xx(
        start_api: Any, api_settings: Settings, sentinels: None) -> None:
    before = _files_outside(api_settings)
    table_before = _table_digest(api_settings)
    assert table_before[0] >= len(SENTINELS)
    hostile = _hostile_requests()
    rng = random.Random(6)
    statuses: list[tuple[str, int, set[int]]] = []
    with start_api(api_tokens=TOKEN, max_upload_bytes=64_000) as api:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=api.url, timeout=60, limits=limits) as client:
            for method, url, kwargs, ok in hostile:
                r = await client.request(method, url, **kwargs)
                statuses.append((f"{method} {url[:60]}", r.status_code, ok))
                assert r.headers["content-type"].startswith("application/json"), (url, r.text[:200])

            async def one(i: int) -> None:
                method, url, kwargs, ok = rng.choice(hostile) if i % 2 else (
                    "GET", "/api/jobs?limit=5", {"headers": AUTH}, {200})
                r = await client.request(method, url, **kwargs)
                statuses.append((f"{method} {url[:60]}", r.status_code, ok))

            await asyncio.gather(*(one(i) for i in range(1000)))
        assert api.proc.poll() is None, api.output()[-2000:]
    wrong = [s for s in statuses if s[1] not in s[2]]
    assert not [s for s in statuses if s[1] >= 500], [s for s in statuses if s[1] >= 500][:5]
    assert not wrong, wrong[:10]
    assert _files_outside(api_settings) == before
    assert _table_digest(api_settings) == table_before  # untouched: same rows, not merely still there
    report.add(hostile_inputs=len(statuses))
