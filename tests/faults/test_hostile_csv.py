"""Generated hostile CSVs through the engine: it never crashes, and for every file
rows imported + rows rejected = records in the file.

Protection proved: the record scanner (quote parity), the salvage path that splits a batch
PostgreSQL refused into records, and the per-record accounting. A scanner that cut a quoted
newline, or a salvage that dropped the rest of a batch after one error, breaks the equation.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from importd.imports import store
from tests.support import report
from tests.support.importing import run_import

TABLE = "public.fuzz"
COLUMNS = ("a", "b", "c")
#: Characters fields are drawn from: delimiters, quotes, both newlines, spaces, non-ASCII.
ALPHABET = st.sampled_from(list("ab1 ,;|\t\"'\r\né€ß\\.") + ["\u00a0", "x" * 50])


@pytest.fixture(scope="module")
def fuzz_settings(migrated: Settings) -> Iterator[Settings]:
    s = dataclasses.replace(migrated, tables=TABLE, rate_limit="none", max_field_bytes=4096)
    with store.connect(s) as conn:
        conn.execute("DROP TABLE IF EXISTS public.fuzz")
        conn.execute("CREATE TABLE public.fuzz (a text, b text, c text)")
    yield s


def _quote(field: str, delimiter: str, force: bool) -> str:
    if force or any(ch in field for ch in (delimiter, '"', "\r", "\n")) or field.strip() in ("\\.", ""):
        return '"' + field.replace('"', '""') + '"'
    return field


@st.composite
def hostile_csv(draw: Any) -> tuple[bytes, int, dict[str, Any]]:
    """(file bytes, records after the header, import options)."""
    delimiter = draw(st.sampled_from([",", ";", "|", "\t"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "cp1252"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    records = []
    for _ in range(draw(st.integers(0, 25))):
        width = draw(st.sampled_from([3, 3, 3, 3, 2, 4]))  # ragged now and then
        fields = [draw(st.lists(ALPHABET, max_size=8).map("".join)) for _ in range(width)]
        if draw(st.integers(0, 30)) == 0:
            fields[0] = "N" * 5000  # over max_field_bytes
        if draw(st.integers(0, 30)) == 0:
            fields[-1] += "\x00"
        records.append(delimiter.join(_quote(f, delimiter, draw(st.booleans())) for f in fields))
    text = delimiter.join(COLUMNS) + newline + "".join(r + newline for r in records)
    data = text.encode(encoding, errors="replace")
    options = {"delimiter": delimiter, "encoding": encoding.replace("-sig", ""), "max_errors": 10**6}
    return data, len(records), options


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=hostile_csv())
def test_generated_files_never_crash_and_every_record_is_imported_or_rejected(fuzz_settings, case):
    data, records, options = case
    with psycopg.connect(fuzz_settings.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE public.fuzz")
    rec, raised = run_import(fuzz_settings, data, TABLE, job_id=uuid.uuid4().hex, **_args(options))
    # Every generated file is importable (max_errors is unbounded): a hostile record is
    # rejected, never the whole file, and the handler raises nothing.
    assert (rec.state, raised) == ("SUCCESS", None), (rec.state, rec.error, raised, data)
    with psycopg.connect(fuzz_settings.database_url, autocommit=True) as conn:
        in_table = conn.execute("SELECT count(*) FROM public.fuzz").fetchone()[0]
    report.add(jobs_run=1, rows_checked=records)
    assert rec.rows_imported == in_table
    assert rec.rows_imported + rec.rows_rejected == records, (rec.rows_imported, rec.rows_rejected, data)


def test_end_of_copy_marker_line_does_not_end_the_import_early(fuzz_settings):
    """A line holding only ``\\.`` is PostgreSQL's end-of-data marker in COPY text; it must
    not silently end the load with the rows after it missing."""
    data = b"a,b,c\n1,2,3\n\\.\n4,5,6\n7,8,9\n"
    with psycopg.connect(fuzz_settings.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE public.fuzz")
    rec, raised = run_import(fuzz_settings, data, TABLE, max_errors=10)
    assert (rec.state, raised) == ("SUCCESS", None), (rec.error, raised)
    assert rec.rows_imported + rec.rows_rejected == 4
    assert rec.rows_imported == 3


def _args(options: dict[str, Any]) -> dict[str, Any]:
    opts = dict(options)
    return {"max_errors": opts.pop("max_errors"), "options": opts}
