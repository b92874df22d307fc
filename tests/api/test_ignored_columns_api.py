"""Columns to ignore through the API: a header field the ``columns`` mapping sends to null is
accepted at upload, read and dropped by a real worker, remembered by ``/api/mappings`` and
shown by the preview; a field neither mapped nor ignored is refused as before."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from importd.config import Settings
from importd.imports import store
from tests.support.infra import wait_for

WORKER_ENV = {"IMPORTD_TABLES": "public.api_people", "IMPORTD_RATE_LIMIT": "none"}
#: Excel's way: an extra Notes column and a trailing delimiter (an empty last header name).
MESSY = "id,name,Notes,age,\r\n{a},Ann,\"call back, maybe\",30,\r\n{b},Bob,,40,\r\n"


def ids() -> tuple[int, int]:
    base = uuid.uuid4().int % 10**12 * 10
    return base + 1, base + 2


def people(settings: Settings, wanted: tuple[int, int]) -> list[tuple[Any, ...]]:
    with store.connect(settings) as conn:
        return conn.execute("SELECT id, name, age FROM api_people WHERE id = ANY(%s) ORDER BY id",
                            (list(wanted),)).fetchall()


def test_an_upload_ignoring_notes_and_the_empty_trailing_column_is_202_and_loads_the_rest(
        start_api: Any, start_worker: Any, api_settings: Settings, broker: Any) -> None:
    """The page's "(no column)" sends null: the job is queued and the worker loads the other fields."""
    a, b = ids()
    columns = json.dumps({"Notes": None, "": None})
    with start_api() as api, httpx.Client(base_url=api.url, timeout=30) as c:
        r = c.post("/api/upload", params={"table": "public.api_people", "columns": columns},
                   content=MESSY.format(a=a, b=b).encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        with start_worker("-Q", "import_queue", "-c", "1", **WORKER_ENV) as worker:
            worker.wait_consuming()
            wait_for(lambda: c.get(f"/api/jobs/{job_id}").json()["state"] == "SUCCESS", timeout=60,
                     what="the job done")
    assert people(api_settings, (a, b)) == [(a, "Ann", 30), (b, "Bob", 40)]
    with store.connect(api_settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None and rec.options["columns"] == {"Notes": None, "": None}


@pytest.mark.anyio
@pytest.mark.parametrize("columns", [None, {"": None}, {"Notes": "notes"}])
async def test_a_field_neither_mapped_nor_ignored_and_not_in_the_table_is_400_naming_it(
        api_client: Any, broker: Any, columns: dict[str, Any] | None) -> None:
    params = {"table": "public.api_people"} | ({"columns": json.dumps(columns)} if columns else {})
    async with api_client() as c:
        r = await c.post("/api/upload", params=params, content=MESSY.format(a=1, b=2).encode(),
                         headers={"Content-Type": "text/csv"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_upload"
    text = " ".join(r.json()["error"]["problems"])
    assert "unknown header columns for public.api_people:" in text and "Notes" in text
    assert ("(empty name, column 5)" in text) == (columns != {"": None})
    assert broker.depth("import_queue") == 0


@pytest.mark.anyio
async def test_a_saved_mapping_keeps_a_null_and_the_next_preview_ignores_that_field(api_client: Any) -> None:
    header = ["id", "name", f"Notes {uuid.uuid4().hex[:8]}", "age", ""]
    columns = {header[2]: None, "": None}
    async with api_client() as c:
        r = await c.put("/api/mappings", json={"table": "public.api_people", "header": header, "columns": columns})
        assert r.status_code == 200, r.text
        assert r.json()["columns"] == columns
        listed = (await c.get("/api/mappings", params={"table": "public.api_people"})).json()["mappings"]
        assert [m["columns"] for m in listed if m["header"] == header] == [columns]
        body = (",".join(header) + "\n1,Ann,whatever,30,\n").encode()
        r = await c.post("/api/preview", params={"table": "public.api_people"}, content=body,
                         headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["mapping_source"] == "saved" and p["problems"] == [] and p["bad_cells"] == 0
    assert [f["ignored"] for f in p["mapping"]["fields"]] == [False, False, True, False, True]
    assert p["mapping"]["columns"] == columns


@pytest.mark.anyio
async def test_the_preview_suggests_ignoring_an_empty_named_column_without_values_but_not_an_extra_one(
        api_client: Any) -> None:
    """Ignoring stays explicit: the suggestion is shown (and sent once the user keeps it); the
    Notes column the table lacks is left for the user to map or ignore, and flagged."""
    async with api_client() as c:
        r = await c.post("/api/preview", params={"table": "public.api_people"},
                         content=MESSY.format(a=1, b=2).encode(), headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    p = r.json()
    fields = {f["header"]: (f["column"], f["how"], f["ignored"]) for f in p["mapping"]["fields"]}
    assert fields[""] == (None, "suggested", True) and fields["Notes"][2] is False
    assert p["mapping"]["columns"].get("") is None and "" in p["mapping"]["columns"]
    assert any("Notes" in problem for problem in p["problems"])
    assert not any("empty name" in problem for problem in p["problems"])
