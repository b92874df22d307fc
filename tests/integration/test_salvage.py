"""Property: whatever the mix of multi-line quoted records, line endings and bad rows, and
wherever batches and salvage chunks are cut, exactly the good rows load and every bad row
is reported with its own line number (PostgreSQL's line numbering is emulated, not trusted)."""

from __future__ import annotations

from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.imports.copy import salvage, screen
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


def dirty_big_file(rows: int = 3000) -> tuple[bytes, int]:
    """A file for ``big`` with 1 bad row in 30 of several kinds; (file, bad rows)."""
    out, bad = ["id,name,amount,note\n"], 0
    for i in range(1, rows + 1):
        kind = i % 30
        if kind == 0:
            out.append(f"{i},n{i},not-a-number,x\n")
        elif kind == 10:
            out.append(f"{i},n{i},12345678901234,x\n")  # numeric field overflow
        elif kind == 20:
            out.append(f"{i},ragged\n")
        else:
            out.append(f'{i},"name, {i}",{i}.{i % 100:02d},"two\nlines"\n' if i % 3 else f"{i},n{i},,\n")
            continue
        bad += 1
    return "".join(out).encode(), bad


def test_screened_batches_load_and_reject_exactly_what_the_plain_salvage_does(isettings, db, monkeypatch):
    data, bad = dirty_big_file()
    options = {"batch_bytes": 8192}
    screened, _ = run_import(isettings, data, "big", max_errors=bad, options=options)
    loaded = rows(db, "SELECT * FROM big ORDER BY id")
    db.execute("TRUNCATE big")
    monkeypatch.setattr(screen, "compile_rows", lambda *args, **kwargs: None)
    plain, _ = run_import(isettings, data, "big", max_errors=bad, options=options)
    assert (screened.state, screened.rows_rejected) == (plain.state, plain.rows_rejected) == ("SUCCESS", bad)
    assert loaded == rows(db, "SELECT * FROM big ORDER BY id") and len(loaded) == 3000 - bad
    assert rejected(isettings, screened.id) == rejected(isettings, plain.id)


def test_screening_sends_each_good_row_once_and_a_failed_copy_only_for_the_first_ragged_row(
        isettings, db, monkeypatch):
    """The typed bad rows (a word, an overflowing number) are judged by one cast query per
    batch (importd.imports.copy.triage); the first ragged row costs one failed one-record
    COPY, whose failure then stands for every ragged row with as many fields."""
    data, bad = dirty_big_file()
    failed, sent = [], []
    attempt = salvage.RawCopy.attempt

    def counting(self, parts):
        def measured():
            for part in parts:
                sent.append(len(part))
                yield part
        result = attempt(self, measured())
        failed.append(result[1] is not None)
        return result

    monkeypatch.setattr(salvage.RawCopy, "attempt", counting)
    rec, _ = run_import(isettings, data, "big", max_errors=bad, options={"batch_bytes": 32768})
    assert (rec.state, rec.rows_rejected) == ("SUCCESS", bad)
    assert sum(failed) == 1  # the first ragged row; bad // 3 of them before the triage knew them
    assert sum(sent) < 1.1 * len(data)  # the good rows go once (the first batch once more, unscreened)
    screened = sum(sent)
    sent.clear()
    db.execute("TRUNCATE big")
    monkeypatch.setattr(screen, "compile_rows", lambda *args, **kwargs: None)
    run_import(isettings, data, "big", max_errors=bad, options={"batch_bytes": 32768})
    assert sum(sent) > 1.5 * screened


def test_a_constraint_the_types_do_not_show_turns_screening_off_and_loses_nothing(isettings, db):
    lines = ["id,name,age"] + [f"{i},n{i},{-i if i % 25 == 0 else i % 90}" for i in range(1, 2001)]
    lines += ["7,duplicate,30", "2001,last,x"]
    rec, _ = run_import(isettings, ("\n".join(lines) + "\n").encode(), max_errors=100,
                        options={"batch_bytes": 4096})
    negative = [i for i in range(1, 2001) if i % 25 == 0]
    assert (rec.state, rec.rows_rejected) == ("SUCCESS", len(negative) + 2)
    assert [r[0] for r in rows(db, "SELECT id FROM people ORDER BY id")] == [
        i for i in range(1, 2001) if i % 25]
    reports = rejected(isettings, rec.id)
    assert [r[0] for r in reports] == [i + 1 for i in negative] + [2002, 2003]
    assert {r[3].split(" of relation")[0] for r in reports[:-2]} == {'new row for relation "people" violates check'
                                                                     ' constraint "people_age_check"'}


WIDE_DDL = """CREATE TABLE wide (id bigint PRIMARY KEY, n smallint, amount numeric(8,2), ratio double precision,
    ok boolean NOT NULL, day date, at timestamptz, code varchar(4), uid uuid, note text)"""
U = "123e4567-e89b-12d3-a456-426614174000"
#: Per column of ``wide`` after id: good values, values the screen leaves to PostgreSQL, bad values.
WIDE_VALUES = [
    ["1", "-32768", "32767", '"12"', " 7", "", "32768", "1e2", "x"],
    ["123456.78", "-0.5", "1.005", ".5", "", "1234567.8", "abc"],
    ["1.5", "NaN", "inf", "1e308", "", "1e309", "x"],
    ["true", "f", "YES", '"t"', "0", "maybe", ""],
    ["2024-02-29", "2024-12-31", "", "2023-02-29", "0000-01-01", "2024-13-01"],
    ["2024-01-01 10:00:00+00", "2024-01-01T10:00:00Z", "2024-05-31 23:59:59.5+02:00", "", "2024-01-01 25:00:00",
     "2024-06-31 00:00:00"],
    ["abcd", "\u00e4\u00f6\u00fc\u00df", '"a,b"', '""', "", "abcde"],
    [U, "{" + U + "}", U.upper(), "", "xyz"],
    ["plain", '"multi\nline"', '"has ""quotes"""', "", "a\x00b", "tab\there"],
]
WIDE_ROW = st.tuples(*(st.sampled_from(v) for v in WIDE_VALUES), st.sampled_from(["", "", "", "", "ragged", "extra",
                                                                                    "latin1"]))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(records=st.lists(WIDE_ROW, min_size=1, max_size=80), batch=st.sampled_from([300, 2000]))
def test_screening_changes_nothing_but_speed_whatever_the_types_and_values(isettings, db, records, batch):
    lines = ["id,n,amount,ratio,ok,day,at,code,uid,note\n"]
    for i, (*fields, twist) in enumerate(records, 1):
        line = ",".join([str(i), *fields])
        line = {"ragged": line.rsplit(",", 2)[0], "extra": line + ",1"}.get(twist, line)
        lines.append(line + ("\xff" if twist == "latin1" else "") + "\n")
    data = "".join(lines).encode("utf-8", "surrogateescape").replace("\xff".encode(), b"\xff")
    outcomes = []
    for compile_rows in (screen.compile_rows, lambda *args, **kwargs: None):
        db.execute("DROP TABLE IF EXISTS wide")
        db.execute(WIDE_DDL)
        with mock.patch.object(screen, "compile_rows", compile_rows):
            rec, raised = run_import(isettings, data, "wide", max_errors=len(records), options={"batch_bytes": batch})
        assert raised is None, raised
        loaded = rows(db, "SELECT wide::text FROM wide ORDER BY id")  # as text: NaN == NaN
        outcomes.append((rec.state, rec.rows_imported, rec.rows_rejected, loaded, rejected(isettings, rec.id)))
    assert outcomes[0] == outcomes[1]


def test_a_format_the_screen_does_not_know_turns_screening_off_after_one_batch(isettings, db, monkeypatch):
    rows_ = [f"{i},n{i},{i}.50,{'x' if i % 10 == 0 else '12/31/2024'}" for i in range(1, 301)]  # US dates
    data = ("id,name,amount,note\n" + "\n".join(rows_) + "\n").encode()
    db.execute("ALTER TABLE big ALTER COLUMN note TYPE date USING NULL")
    screened = []
    split = screen.split
    monkeypatch.setattr(screen, "split", lambda *args: screened.append(1) or split(*args))
    rec, _ = run_import(isettings, data, "big", max_errors=30, options={"batch_bytes": 1024})
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", 270, 30)
    assert len(screened) == 1
