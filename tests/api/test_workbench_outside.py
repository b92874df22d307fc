"""The workbench (issue 16) tried from outside with real-world messy files: preview, mappings,
dry run, rejects, jobs and DLQ views. Every answer is a 2xx or a 4xx naming the problem,
never a 500; the preview reads a file as the import will; nothing is lost or loaded twice."""

from __future__ import annotations

import base64
import codecs
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from importd.imports import preview, store
from tests.support.importing import rejected, run_import

pytestmark = pytest.mark.anyio

TABLE = "public.wbo_items"
DDL = ("CREATE TABLE IF NOT EXISTS wbo_items (id bigint, name text NOT NULL, qty integer,"
       " total bigint GENERATED ALWAYS AS (qty * 2) STORED)")
EOLS = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}


@pytest.fixture
def wbo(api_settings: Settings) -> Settings:
    """The run's settings with ``wbo_items`` (created empty) as the only allowlisted table."""
    with store.connect(api_settings) as conn:
        conn.execute(DDL)
        conn.execute("TRUNCATE wbo_items")
    return replace(api_settings, tables=TABLE)


def csv_field(value: str, delimiter: str) -> str:
    """A field as a spreadsheet writes it: quoted when it holds a delimiter, a quote or a line
    break, or is empty (an unquoted empty field is NULL)."""
    if value == "" or any(c in value for c in (delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_file(rows: list[list[str]], eol: str, delimiter: str = ",") -> str:
    return "".join(delimiter.join(csv_field(v, delimiter) for v in row) + eol for row in rows)


async def post_preview(client: httpx.AsyncClient, data: bytes, **params: str) -> httpx.Response:
    return await client.post("/api/preview", params={"table": TABLE, **params}, content=data,
                             headers={"Content-Type": "text/csv"})


NAMES = st.lists(st.sampled_from(["a", "é", " ", ",", ";", "\"", "\n", "\r", "\r\n", "x"]),
                 min_size=1, max_size=6).map("".join)


def test_the_preview_splits_records_and_numbers_lines_as_the_import_for_every_line_end_and_delimiter(
        start_api: Callable[..., Any], wbo: Settings) -> None:
    """A bare-CR file (old Mac exports) was read as one long record; the preview now ends
    records at the file's own line break, as the import does, quoted line breaks included."""
    with start_api(tables=TABLE) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(names=st.lists(NAMES, min_size=1, max_size=8), eol=st.sampled_from(sorted(EOLS.values())),
               delimiter=st.sampled_from([",", ";", "\t", "|"]), bom=st.booleans())
        def check(names: list[str], eol: str, delimiter: str, bom: bool) -> None:
            rows = [[str(i), name, str(i)] for i, name in enumerate(names, 1)]
            text = csv_file([["id", "name", "qty"], *rows], eol, delimiter)
            data = (codecs.BOM_UTF8 if bom else b"") + text.encode()
            r = client.post("/api/preview", params={"table": TABLE}, content=data, headers={"Content-Type": "text/csv"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["delimiter"] == delimiter and body["header"] == ["id", "name", "qty"]
            assert [[c["value"] for c in row["cells"]] for row in body["rows"]] == rows
            brk = "\r" if eol == "\r" else "\n"
            lines = [2 + sum(csv_file([r], eol, delimiter).count(brk) for r in rows[:k]) for k in range(len(rows))]
            assert [row["line"] for row in body["rows"]] == lines
            assert body["bad_rows"] == 0 and body["notes"] == []
        check()


@pytest.mark.parametrize("eol,foreign", [("lf", "\r"), ("crlf", "\n"), ("crlf", "\r"), ("cr", "\n")])
async def test_a_line_end_of_another_style_is_flagged_in_the_preview_as_the_import_rejects_it(
        api_client: Any, wbo: Settings, eol: str, foreign: str) -> None:
    """PostgreSQL fixes a file's line end at its header and refuses any other outside quotes:
    the preview says so on that record, with the import's own reason and line."""
    end = EOLS[eol]
    data = f"id,name,qty{end}1,Ann,1{end}2,Bob{foreign}Two,2{end}3,Cid,3{end}".encode()
    async with api_client(tables=TABLE) as client:
        body = (await post_preview(client, data)).json()
    rec, _ = run_import(wbo, data, table=TABLE, max_errors=10)
    flagged = [(row["line"], row["error"]) for row in body["rows"] if "unquoted" in (row["error"] or "")]
    assert len(flagged) == 1
    assert flagged == [(line, reason) for line, _column, _value, reason in rejected(wbo, rec.id)
                       if "unquoted" in reason]


async def test_a_first_record_longer_than_the_head_is_named_in_the_preview_not_an_empty_grid(
        api_client: Any, wbo: Settings) -> None:
    """A huge quoted field (a pasted document) at line 2: the grid cannot show it, and the
    answer says why instead of silently showing no records."""
    data = b'id,name,qty\n1,"' + b"long line\n" * (preview.HEAD_BYTES // 10) + b'",1\n2,Bob,2\n'
    async with api_client(tables=TABLE) as client:
        body = (await post_preview(client, data)).json()
    assert body["rows_shown"] == 0 and body["complete"] is False
    assert len(body["notes"]) == 1 and "line 2" in body["notes"][0]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
async def test_a_utf16_or_utf32_file_is_refused_by_preview_and_upload_naming_its_encoding(
        api_client: Any, wbo: Settings, encoding: str) -> None:
    """Excel's "Unicode text" export is UTF-16: PostgreSQL cannot read it, and "the header
    contains a NUL byte at byte offset 5" told the user nothing. Both routes now say what the
    file is and what to do; the upload queues nothing."""
    data = "id\tname\tqty\r\n1\tZoë\t2\r\n".encode(encoding)
    wide = encoding[:6].upper()
    async with api_client(tables=TABLE) as client:
        before = (await client.get("/api/jobs", params={"table": TABLE})).json()["jobs"]
        answers = [await post_preview(client, data),
                   await client.post("/api/preview", data={"table": TABLE}, files={"file": ("u.csv", data)}),
                   await client.post("/api/upload", params={"table": TABLE}, content=data,
                                     headers={"Content-Type": "text/csv"}),
                   await client.post("/api/upload", data={"table": TABLE}, files={"file": ("u.csv", data)})]
        jobs = (await client.get("/api/jobs", params={"table": TABLE})).json()["jobs"]
    for r in answers:
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "bad_upload" and wide in message and "UTF-8" in message, message
    assert jobs == before  # nothing queued


JSON_ROUTES = [("PUT", "/api/mappings", 1024 * 1024), ("POST", "/api/dlq/replay", 1024 * 1024),
               ("POST", "/api/uploads", 16 * 1024)]


@pytest.mark.parametrize("method,path,limit", JSON_ROUTES)
@pytest.mark.parametrize("body,status", [
    (b"[" * 5000 + b"]" * 5000, 400),                    # deeper than the JSON parser goes: was a 500
    (b'{"a": ' * 2000 + b"1" + b"}" * 2000, 400),
    (b"\xff\xfe{}", 400), (b"[]", 400), (b'"x"', 400), (b"{", 400),
    (None, 413),                                         # past the route's limit: not held whole
])
async def test_every_json_route_answers_a_hostile_body_with_400_or_413_never_500(
        api_client: Any, wbo: Settings, method: str, path: str, limit: int, body: bytes | None,
        status: int) -> None:
    sent = body if body is not None else b'{"job_ids": ["' + b"0" * (limit + 10) + b'"]}'
    async with api_client(tables=TABLE) as client:
        r = await client.request(method, path, content=sent, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == ("payload_too_large" if status == 413 else "bad_request")


@pytest.mark.parametrize("header,columns,says", [
    (["a", "name"], {"a": "nosuch"}, "no such column in public.wbo_items: 'nosuch'"),
    (["a", "b"], {"a": "name", "b": "name"}, "several header fields map to one column: name <- a, b"),
    (["a", "name"], {"a": "name"}, "several header fields map to one column: name <- a, name"),
    (["ID", "qty"], {"ID": "id", " id ": "qty"}, "a header field more than once"),
    (["a"], {"x": "id"}, "the header lacks: 'x'"),
    (["a", "name"], {"a": "total"}, "generated columns cannot be imported: 'total'"),
    (["a", "name"], {"a": "x" * 500_000}, "no such column"),
])
async def test_a_mapping_the_import_could_not_apply_is_refused_and_leaves_the_saved_one_alone(
        api_client: Any, wbo: Settings, header: list[str], columns: dict[str, str], says: str) -> None:
    """It was saved (200), and the next file with that header was then mapped to a column that
    does not exist or to one column twice, so its upload was refused after the user had
    confirmed the mapping."""
    good = {"a": "qty"} if "a" in header else {}
    async with api_client(tables=TABLE) as client:
        first = await client.put("/api/mappings", json={"table": TABLE, "header": header, "columns": good})
        r = await client.put("/api/mappings", json={"table": TABLE, "header": header, "columns": columns})
        listed = (await client.get("/api/mappings", params={"table": TABLE})).json()["mappings"]
    assert first.status_code == 200, first.text
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_mapping", r.text
    assert says in r.json()["error"]["message"]
    assert [m["columns"] for m in listed if m["header"] == header] == [good]


async def test_a_saved_mapping_of_a_unicode_header_maps_the_next_file_and_its_upload_is_accepted(
        api_client: Any, wbo: Settings) -> None:
    header = ["Имя", " Artikel-Nr. ", "Menge (Stück)"]
    columns = {"Имя": "name", " artikel-nr. ": "ID", "Menge (Stück)": "qty"}
    data = "Имя; Artikel-Nr. ;Menge (Stück)\r\nÄnne;1;2\r\n".encode()
    async with api_client(tables=TABLE) as client:
        put = await client.put("/api/mappings", json={"table": TABLE, "header": header, "columns": columns})
        body = (await post_preview(client, data)).json()
        mapping = json.dumps(body["mapping"]["columns"])
        up = await client.post("/api/upload", params={"table": TABLE, "columns": mapping}, content=data,
                               headers={"Content-Type": "text/csv"})
        if up.status_code == 202:  # no worker here: take it off the queue's books
            await client.post(f"/api/jobs/{up.json()['job_id']}/cancel")
    assert put.status_code == 200, put.text
    assert body["mapping_source"] == "saved" and body["problems"] == [] and body["bad_rows"] == 0
    assert [(f["column"], f["how"]) for f in body["mapping"]["fields"]] == [("name", "explicit"), ("id", "explicit"),
                                                                          ("qty", "explicit")]
    assert up.status_code == 202, up.text


def cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("params", [
    {"state": "FOO"}, {"state": "success"}, {"state": "\x00"}, {"limit": "0"}, {"limit": "1e3"}, {"table": "\x00"},
    {"cursor": "!!!"}, {"cursor": cursor([1, 2])}, {"cursor": cursor([None, "x"])}, {"cursor": cursor("ab")},
    {"cursor": cursor(["2024-01-01", "x"])}, {"cursor": cursor(["2024-01-01T00:00:00+00:00", "\x00"])},
    {"cursor": cursor({"a": 1})}, {"cursor": cursor([[[[[]]]]])}, {"cursor": "W" * 4000},
    {"cursor": cursor(["2024-01-01T00:00:00+00:00", 5])},
])
async def test_a_job_list_filter_or_cursor_the_api_did_not_make_is_400(
        api_client: Any, wbo: Settings, params: dict[str, str]) -> None:
    """A cursor that decoded to other JSON (``[1, 2]``) reached PostgreSQL's timestamp cast: 500."""
    async with api_client(tables=TABLE) as client:
        r = await client.get("/api/jobs", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("bad_request", "bad_cursor")


@pytest.mark.parametrize("sent", ["wbo_items", "public.wbo_items", " public.wbo_items "])
@pytest.mark.parametrize("filtered", ["wbo_items", "public.wbo_items", "x' OR 1=1 --", "public.wbo_items; --"])
async def test_the_job_list_filter_finds_a_tables_jobs_however_the_table_was_named(
        api_client: Any, wbo: Settings, sent: str, filtered: str) -> None:
    """A job submitted as ``wbo_items`` was missing from the page's filter ``public.wbo_items``
    (the allowlist's spelling) and the other way round; text that is no table finds nothing."""
    rec, _ = run_import(wbo, b"id,name,qty\n1,Ann,2\n", table=sent)
    async with api_client(tables=TABLE) as client:
        r = await client.get("/api/jobs", params={"table": filtered, "limit": "1000"})
    assert r.status_code == 200, r.text
    found = rec.id in [j["id"] for j in r.json()["jobs"]]
    assert found == ("wbo_items" in filtered and "'" not in filtered and ";" not in filtered)


DRY_TABLE = "public.wbo_dry"
DRY_DDL = ("CREATE TABLE IF NOT EXISTS wbo_dry (id integer, d date, name varchar(5) NOT NULL, f float8,"
           " tz timestamptz, n smallint)")
#: Kind of bad row -> (column, reason kind) its group has.
DRY_KINDS = {
    1: (None, "extra data after last expected column"),
    2: ("d", "date/time field value out of range"),
    3: ("id", "value is out of range for type integer"),
    4: ("n", "value is out of range for type smallint"),
    5: ("f", "value is out of range for type double precision"),
    6: ("tz", "time zone not recognized"),
    7: (None, 'invalid byte sequence for encoding "UTF8"'),
}


def dry_file(rows: int, seed: int) -> tuple[bytes, dict[tuple[str | None, str], list[int]]]:
    """A file whose every row but each 8th is bad in one of seven ways, each bad value
    different (another number, zone, byte): the file and the lines of each group."""
    rnd = random.Random(seed)
    out, groups = [b"id,d,name,f,tz,n\n"], {kind: [] for kind in DRY_KINDS.values()}
    for i in range(rows):
        row = [str(i), "2024-01-02", "ab", "1.0", "2024-01-01 00:00+00", "1"]
        kind = i % 8
        if kind == 1:
            row[3] = f"{rnd.randint(1, 999)},{rnd.randint(0, 99)}"  # a decimal comma, unquoted
        elif kind == 2:
            row[1] = f"2024-{rnd.randint(13, 99)}-{rnd.randint(1, 28)}"
        elif kind == 3:
            row[0] = str(rnd.randint(2**31, 10**12))
        elif kind == 4:
            row[5] = str(rnd.randint(2**15, 10**6))
        elif kind == 5:
            row[3] = f"{rnd.randint(1, 9)}e{rnd.randint(400, 9999)}"
        elif kind == 6:
            row[4] = f"2024-01-01 00:00 Mars/Base{rnd.randint(1, 10**6)}"
        line = ",".join(row).encode()
        if kind == 7:
            line = line.replace(b",ab,", b"," + bytes([rnd.randint(0xC0, 0xFF)]) + b"x,")  # a lone latin-1 byte
        out.append(line + b"\n")
        if kind:
            groups[DRY_KINDS[kind]].append(i + 2)
    return b"".join(out), groups


async def test_a_dry_run_of_thousands_of_bad_rows_of_a_few_kinds_reports_a_few_exact_groups(
        api_client: Any, api_settings: Settings) -> None:
    """Out-of-range numbers, unknown time zones and stray bytes each made one group per
    value, so 2,900 rows ended under "other reasons" and the 50 groups named single values."""
    with store.connect(api_settings) as conn:
        conn.execute(DRY_DDL)
    settings_ = replace(api_settings, tables=DRY_TABLE)
    data, groups = dry_file(8000, seed=16)
    rec, raised = run_import(settings_, data, table=DRY_TABLE, max_errors=10**6, validate_only=True)
    assert raised is None and rec.state == "SUCCESS"
    async with api_client(tables=DRY_TABLE) as client:
        job = await client.get(f"/api/jobs/{rec.id}")
        rejects = await client.get(f"/api/jobs/{rec.id}/rejects.csv")
    got = {(g["column"], g["reason"]): (g["count"], g["lines"]) for g in job.json()["rejects"]["groups"]}
    assert got == {kind: (len(lines), lines[:3]) for kind, lines in groups.items()}
    assert rec.rows_rejected == job.json()["rejects"]["records"] == 7000
    assert len(job.content) < 4096  # bounded: a few groups, whatever the number of bad rows
    assert rejects.status_code == 200 and rejects.content.count(b"\n") == 7001
    with store.connect(api_settings) as conn:
        assert conn.execute("SELECT count(*) FROM wbo_dry").fetchone() == (0,)  # a dry run loads nothing


async def test_replaying_ids_the_dlq_does_not_hold_says_which_and_moves_nothing(
        api_client: Any, broker: Any) -> None:
    """``{"replayed": []}`` did not tell an operator that the id was wrong or already replayed."""
    from tests.api.test_dlq_api import _dead_letters
    ids = _dead_letters(broker, 1)
    absent = "0" * 32
    async with api_client() as client:
        r = await client.post("/api/dlq/replay", json={"job_ids": [absent, ids[0], absent]})
        again = await client.post("/api/dlq/replay", json={"job_ids": ids})
    assert r.status_code == 200, r.text
    assert [d["job_id"] for d in r.json()["replayed"]] == ids and r.json()["not_found"] == [absent]
    assert again.json() == {"replayed": [], "not_found": ids}
    assert broker.depth("failed_tasks") == 0 and broker.depth("default") == 1


ROUTES = [("POST", "/api/preview"), ("GET", "/api/mappings"), ("PUT", "/api/mappings"), ("GET", "/api/jobs"),
          ("GET", f"/api/jobs/{'0' * 32}/rejects.csv"), ("POST", f"/api/jobs/{'0' * 32}/cancel"),
          ("GET", "/api/dlq"), ("POST", "/api/dlq/replay")]


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic c2VrcmV0Og==", "Bearer "])
async def test_every_workbench_route_needs_the_token_when_tokens_are_set(
        api_client: Any, wbo: Settings, method: str, path: str, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth is not None else {}
    async with api_client(tables=TABLE, api_tokens="sekret") as client:
        r = await client.request(method, path, headers=headers, json={"job_ids": ["0" * 32]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text


#: Spreadsheet exports as people have them: (line end, encoding, byte order mark, delimiter).
EXPORTS = {
    "excel-utf8-bom-crlf": ("\r\n", "utf-8", True, ","),
    "old-mac-cr": ("\r", "utf-8", False, ","),
    "german-excel-cp1252-semicolon": ("\r\n", "cp1252", False, ";"),
    "libreoffice-tab-lf": ("\n", "utf-8", False, "\t"),
}


def export(eol: str, encoding: str, bom: bool, delimiter: str) -> tuple[bytes, list[int]]:
    """40 records (quoted line breaks, accents) of which every 4th has a bad qty and every
    7th an empty name: the file and the ids of its bad records."""
    rows, bad = [["ID", "Name", "Qty"]], []
    for i in range(1, 41):
        name = "Zoë Ångström" if i % 3 else 'two\nlines; "quoted", é'
        qty = str(i)
        if i % 4 == 0:
            qty = "x"
        elif i % 7 == 0:
            name = ""
        if i % 4 == 0 or i % 7 == 0:
            bad.append(i)
        rows.append([str(i), name, qty])
    text = "".join(delimiter.join(v if v == "" else csv_field(v, delimiter) for v in row) + eol for row in rows)
    return (codecs.BOM_UTF8 if bom else b"") + text.encode(encoding), bad


def fix_rejects(data: bytes, delimiter: str, eol: str) -> bytes:
    """What the user does in the file: a number for the qty, a name where there was none."""
    d, e = delimiter.encode(), eol.encode()
    return data.replace(d + b"x" + e, d + b"5" + e).replace(d + d, d + b"Fixed" + d)


def load_through_the_page_api(client: httpx.Client, data: bytes) -> dict[str, Any]:
    """What the page does: preview, then upload with the detected dialect and the mapping,
    then follow the job to its end; the finished job's JSON."""
    seen = client.post("/api/preview", params={"table": TABLE}, content=data, headers={"Content-Type": "text/csv"})
    assert seen.status_code == 200, seen.text
    p = seen.json()
    assert p["problems"] == [], p["problems"]
    fields = {"table": TABLE, "encoding": p["encoding"], "delimiter": p["delimiter"], "max_errors": "100",
              "columns": json.dumps(p["mapping"]["columns"])}
    r = client.post("/api/upload", data=fields, files={"file": ("export.csv", data, "text/csv")})
    assert r.status_code == 202, r.text
    job: dict[str, Any] = {}
    for _ in range(600):
        job = client.get(r.json()["status_url"]).json()
        if job["state"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            break
        time.sleep(0.1)
    return job


def test_every_spreadsheet_export_round_trips_through_preview_upload_rejects_and_reupload_each_row_once(
        start_api: Callable[..., Any], start_worker: Callable[..., Any], wbo: Settings, broker: Any) -> None:
    """From outside, as the page does it, for each export style: the rejected records come back
    byte for byte under the file's own header (BOM, line end, encoding, quoting kept), load
    once fixed with the dialect the preview detects, and the table then holds every id once."""
    with start_worker("-Q", "import_queue", "-c", "1", IMPORTD_TABLES=TABLE, IMPORTD_RATE_LIMIT="none") as worker, \
            start_api(tables=TABLE) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        worker.wait_consuming()
        for name, (eol, encoding, bom, delimiter) in EXPORTS.items():
            with store.connect(wbo) as conn:
                conn.execute("TRUNCATE wbo_items")
            data, bad = export(eol, encoding, bom, delimiter)
            first = load_through_the_page_api(client, data)
            assert (first["state"], first["rows_imported"], first["rows_rejected"]) == ("SUCCESS", 40 - len(bad),
                                                                                        len(bad)), (name, first)
            rejects = client.get(f"/api/jobs/{first['id']}/rejects.csv")
            assert rejects.status_code == 200, (name, rejects.text)
            header_end = data.index(eol.encode()) + len(eol)
            assert rejects.content.startswith(data[:header_end]), name  # the file's own header bytes, BOM and all
            records = rejects.content[header_end:]
            assert all(record in data for record in records.split(eol.encode()) if record), name
            second = load_through_the_page_api(client, fix_rejects(rejects.content, delimiter, eol))
            assert (second["state"], second["rows_imported"], second["rows_rejected"]) == ("SUCCESS", len(bad), 0), \
                (name, second)
            with store.connect(wbo) as conn:
                ids = [r[0] for r in conn.execute("SELECT id FROM wbo_items ORDER BY id").fetchall()]
            assert ids == list(range(1, 41)), name


@pytest.mark.parametrize("header", [
    b"id,name,qty,",            # Excel's trailing delimiter: an empty last name
    b"id,,name,,qty",           # two empty names: were also reported as "duplicate header columns: "
    b"Name,name,qty", b"id, name ,NAME", b"id,name,qty,extra,more", b",,", b"  ,name,qty",
    b"qty,name,id,id", b"id;name;qty;",
])
async def test_the_preview_names_every_header_problem_as_the_upload_refuses_it(
        api_client: Any, wbo: Settings, header: bytes) -> None:
    """One set of rules: what the preview lists is what the upload's 400 lists, each problem
    naming its fields (an empty name is said to be one), but for the empty names without values
    the preview suggests ignoring (the problems are those left once the user keeps its proposal;
    the upload, sent no mapping, still refuses them: ignoring is explicit)."""
    data = header + b"\n1,Ann,2\n"
    async with api_client(tables=TABLE) as client:
        shown = (await post_preview(client, data)).json()
        refused = await client.post("/api/upload", params={"table": TABLE}, content=data,
                                    headers={"Content-Type": "text/csv"})
    assert refused.status_code == 400, refused.text
    problems = refused.json()["error"]["problems"]
    suggested = {f"(empty name, column {i})" for i, f in enumerate(shown["mapping"]["fields"], 1) if f["ignored"]}
    assert all(f["how"] == "suggested" for f in shown["mapping"]["fields"] if f["ignored"])
    assert (header in (b"id,name,qty,", b"id;name;qty;")) == bool(suggested)  # an empty name with no value
    assert shown["problems"] == without(problems, suggested) and problems
    for problem in problems:
        assert not problem.rstrip().endswith(":") and ", ," not in problem and ": ," not in problem, problem


def without(problems: list[str], names: set[str]) -> list[str]:
    """``problems`` with ``names`` left out of the unknown header columns (a problem naming
    only them gone)."""
    out = []
    for problem in problems:
        head, _, listed = problem.partition(": ")
        if head.startswith("unknown header columns for ") and names:
            kept = [n.strip() for n in re.findall(r"\(empty name, column \d+\)|[^,]+", listed)
                    if n.strip() not in names]
            if kept:
                out.append(f"{head}: {', '.join(kept)}")
        else:
            out.append(problem)
    return out


MESSY_NUMBERS = st.sampled_from(["1", " 2", "3 ", "1.5", "", '""', "1e3", "+4", "-0", "0x10", "2147483648", "١٢",
                                 "1,000", '"1,000"', "NaN", "5", "９", '"7"', "null", "\\N"])
EXTRA_FIELDS = st.sampled_from(["", ",9", ",", ",,"])
MESSY_NAMES = st.sampled_from(["Ann", "", '""', '" "', "Zoë", '"two\nlines"', "a\\b", '"quote "" in"', "NULL",
                               'a"b', '"x" ', ' "y"', '"x"y', "\udcff", "\\.", "é\r"])


def test_the_preview_flags_exactly_the_lines_a_dry_run_rejects(start_api: Callable[..., Any], wbo: Settings) -> None:
    """Same rules, same verdicts: for any messy first records, the lines the preview marks bad
    are the lines the dry run of that file rejects (the table has no constraint the preview
    leaves to the dry run)."""
    with start_api(tables=TABLE) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(rows=st.lists(st.tuples(MESSY_NUMBERS, MESSY_NAMES, MESSY_NUMBERS, EXTRA_FIELDS),
                             min_size=1, max_size=12),
               eol=st.sampled_from(["\n", "\r\n", "\r"]))
        def check(rows: list[tuple[str, str, str, str]], eol: str) -> None:
            text = "id,name,qty" + eol + "".join(f"{i},{n},{q}{extra}{eol}" for i, n, q, extra in rows)
            data = text.encode("utf-8", "surrogateescape")  # \udcff: a byte that is not UTF-8
            body = client.post("/api/preview", params={"table": TABLE}, content=data,
                               headers={"Content-Type": "text/csv"}).json()
            flagged = sorted(r["line"] for r in body["rows"] if r["error"] or any(c["error"] for c in r["cells"]))
            rec, raised = run_import(wbo, data, table=TABLE, max_errors=1000, validate_only=True,
                                     options={"encoding": body["encoding"]})  # the page sends what it detected
            assert raised is None, raised
            assert flagged == sorted(line for line, *_ in rejected(wbo, rec.id)), (body["rows"], rejected(wbo, rec.id))
        check()


TYPED_TABLE = "public.wbo_typed"
TYPED_DDL = ("CREATE TABLE IF NOT EXISTS wbo_typed (v varchar(3), c char(2), n numeric(5,2), d date, b boolean,"
             " t text NOT NULL)")
TYPED_VALUES = {
    "v": st.sampled_from(["ab", "abc", "abcd", "ab    ", "abc ", "abcd ", '"ab  "', "éé", "ééé ", "", '""', "a\tb  "]),
    "c": st.sampled_from(["a", "ab", "abc", "ab  ", '" "', "", "é "]),
    "n": st.sampled_from(["1", "999.99", "1000", "999.999", "-0.001", "1e2", "", "abc", " 5 ", "1,5"]),
    "d": st.sampled_from(["2024-02-29", "2023-02-29", "20240101", "1/2/2024", "", "today", "infinity", "2024-13-01"]),
    "b": st.sampled_from(["t", "yes", "on", "1", "ja", "", "TRUE", " true", "2"]),
    "t": st.sampled_from(["x", "", '""', "NULL"]),
}


def test_the_preview_flags_exactly_the_lines_a_dry_run_rejects_for_typed_columns(
        start_api: Callable[..., Any], api_settings: Settings) -> None:
    """A varchar(3) cell padded with spaces (a fixed-width export) loads, as COPY keeps only
    the length up to trailing spaces; the preview marked it "value too long"."""
    with store.connect(api_settings) as conn:
        conn.execute(TYPED_DDL)
    typed = replace(api_settings, tables=TYPED_TABLE)
    columns = list(TYPED_VALUES)
    with start_api(tables=TYPED_TABLE) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(rows=st.lists(st.tuples(*TYPED_VALUES.values()), min_size=1, max_size=10))
        def check(rows: list[tuple[str, ...]]) -> None:
            data = (",".join(columns) + "\n" + "".join(",".join(row) + "\n" for row in rows)).encode()
            body = client.post("/api/preview", params={"table": TYPED_TABLE}, content=data,
                               headers={"Content-Type": "text/csv"}).json()
            flagged = sorted(r["line"] for r in body["rows"] if r["error"] or any(c["error"] for c in r["cells"]))
            rec, raised = run_import(typed, data, table=TYPED_TABLE, max_errors=1000, validate_only=True)
            assert raised is None, raised
            refused = rejected(typed, rec.id)
            assert flagged == sorted(line for line, *_ in refused), (body["rows"], refused)
        check()


@pytest.mark.parametrize("declared", [True, False])
async def test_a_multipart_preview_of_a_file_past_the_upload_limit_is_413_not_read_to_its_end(
        api_client: Any, wbo: Settings, declared: bool) -> None:
    """The multipart preview kept 1 MiB but read any body to its end (fields may follow the
    file): a client could hold a request open for a file no upload would take."""
    limit = 64 * 1024
    boundary = "b0und4ry"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"table\"\r\n\r\n{TABLE}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\nid,name,qty\n").encode()
    rows = b"1,Ann,2\n" * (4 * limit // 8)
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def chunks() -> Any:  # no Content-Length: the limit is met while reading
        for part in (head, *(rows[i:i + 8192] for i in range(0, len(rows), 8192)), tail):
            yield part

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with api_client(tables=TABLE, max_upload_bytes=limit) as client:
        small = await client.post("/api/preview", headers=headers, content=head + rows[:limit // 2] + tail)
        big = await client.post("/api/preview", headers=headers,
                                content=head + rows + tail if declared else chunks())
    assert small.status_code == 200, small.text
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large", big.text
