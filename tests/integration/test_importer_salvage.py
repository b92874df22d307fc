"""Property: whatever the mix of multi-line quoted records, line endings and bad rows, and
wherever batches and salvage chunks are cut, exactly the good rows load and every bad row
is reported with its own line number (PostgreSQL's line numbering is emulated, not trusted)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.importing import rejected, rows, run_import

NAMES = st.sampled_from(["plain", '"with, comma"', '"two\nlines"', '"three\nshort\nlines"', '"quote "" inside"',
                         '""', "", '"crlf\r\ninside"'])
RECORD = st.tuples(NAMES, st.booleans())  # (name field, bad age)


def build(records: list[tuple[str, bool]], eol: str) -> tuple[bytes, list[int], list[int]]:
    """The file, the ids expected to load, and the (first) line numbers of the bad records."""
    out, good, bad_lines, line = ["id,name,age" + eol], [], [], 2
    for i, (name, is_bad) in enumerate(records, 1):
        is_bad = is_bad or name == ""  # unquoted empty: NULL, refused by NOT NULL
        text = f"{i},{name},{'x' if is_bad else i % 50}{eol}"
        out.append(text)
        (bad_lines.append(line) if is_bad else good.append(i))
        line += text.count("\n")
    return "".join(out).encode(), good, bad_lines


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(records=st.lists(RECORD, min_size=1, max_size=60), eol=st.sampled_from(["\n", "\r\n"]),
       batch=st.sampled_from([64, 300, 8192]), staged=st.booleans())
def test_exactly_the_good_rows_load_and_each_bad_row_is_reported_at_its_line(isettings, db, records, eol, batch,
                                                                             staged):
    db.execute("TRUNCATE people")
    data, good, bad_lines = build(records, eol)
    options = {"batch_bytes": batch, **({"on_conflict": "skip"} if staged else {})}
    rec, raised = run_import(isettings, data, max_errors=len(records), options=options)
    assert raised is None, raised
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", len(good), len(bad_lines))
    assert [r[0] for r in rows(db, "SELECT id FROM people ORDER BY id")] == good
    reports = rejected(isettings, rec.id)
    assert [r[0] for r in reports] == bad_lines
    assert {(r[1], r[2]) for r in reports} <= {("age", "x"), ("name", None)}
