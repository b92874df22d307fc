"""Every shape of table the benchmark loads into (issue 15): atomic, resumable on one stream
and resumable on two and three streams leave the same rows, counts and rejected rows, row for
row, whatever the bad rows and (upsert) the repeated keys. The engine's fast paths (the
screen, the staged salvage of ``on_conflict``, parallel streams) must never change an outcome."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from tests.bench.generate import WIDE_DDL, WIDE_HEADER, _wide_bad_row, _wide_row
from tests.support.importing import rejected, rows, run_import

BIG = "CREATE TABLE big (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(12,2), note text)"
#: (statements making the table, options, rows already there) per shape.
SHAPES = {
    "b-pk": ([BIG], {}, False),
    "c-pk-and-text-index": ([BIG, "CREATE INDEX ON big (name)"], {}, False),
    "d-upsert": ([BIG], {"on_conflict": "update", "conflict_key": ["id"]}, True),
    "d-skip": ([BIG], {"on_conflict": "skip"}, True),
    "e-wide": ([WIDE_DDL.format(name="wide")], {}, False),
}
#: (mode, streams) of the runs compared.
RUNS = (("resumable", 1), ("resumable", 2), ("resumable", 3), ("atomic", 1))
BAD = (b"%d,name,x,\n", b"%d,,1.00,\n", b"%d,ragged\n", b'%d,"quoted, name",1e400,\n')


def big_file(n: int, bad: set[int], repeats: list[int]) -> bytes:
    """``n`` rows (every 7th with a quoted note over two lines, every 11th a good suspect), bad ones as ``BAD`` says,
    then the ``repeats`` ids again with other values (a key in two batches, or twice in one)."""
    out = [b"id,name,amount,note\n"]
    for i in range(1, n + 1):
        if i in bad:
            out.append(BAD[i % len(BAD)] % i)
        elif i % 11 == 0:  # good, but a suspect to the screen (an exponent)
            out.append(b"%d,name %d,1e1,plain\n" % (i, i))
        elif i % 7 == 0:
            out.append(b'%d,name %d,%d.%02d,"a note, ""quoted""\nover two lines"\n' % (i, i, i, i % 100))
        else:
            out.append(b"%d,name %d,%d.%02d,plain\n" % (i, i, i, i % 100))
    out.extend(b"%d,again %d,%d.50,repeated\n" % (i, i, i) for i in repeats)
    return b"".join(out)


def wide_file(n: int, bad: set[int], seed: int) -> bytes:
    rng = random.Random(seed)
    return (WIDE_HEADER + "".join(_wide_bad_row(i, rng) if i in bad else _wide_row(i, rng)
                                  for i in range(1, n + 1))).encode()


def outcomes(isettings: Settings, db, shape: str, data: bytes, max_errors: int) -> list[tuple[object, ...]]:
    ddl, options, prefilled = SHAPES[shape]
    table = "wide" if shape.startswith("e") else "big"
    query = f"SELECT * FROM {table} ORDER BY id"
    results = []
    for mode, streams in RUNS:
        if mode == "atomic" and max_errors < 1000:
            continue  # a failed atomic import keeps nothing, a resumable one its committed prefix
        db.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in ddl:
            db.execute(statement)
        if prefilled:  # half the rows there already, with other values
            db.execute("INSERT INTO big SELECT i, 'before ' || i, -1, 'old' FROM generate_series(2, 400, 2) i")
        s = dataclasses.replace(isettings, import_streams=streams)
        rec, _ = run_import(s, data, table, mode=mode, max_errors=max_errors,
                            options={"batch_bytes": 1024, **options})
        results.append(((mode, streams), rec.state, rec.rows_imported, rec.rows_rejected, rec.error,
                        rejected(s, rec.id), rows(db, query)))
    return results


def assert_same(results: list[tuple[object, ...]]) -> None:
    first = results[0]
    for other in results[1:]:
        assert other[1:] == first[1:], f"{other[0]} differs from {first[0]}"


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(shape=st.sampled_from(sorted(k for k in SHAPES if not k.startswith("e"))),
       bad=st.sets(st.integers(1, 400), max_size=12), max_errors=st.sampled_from([3, 1000]),
       repeats=st.lists(st.integers(1, 400), max_size=8))
def test_every_narrow_shape_gives_one_outcome_in_every_mode_and_stream_count(isettings, db, shape, bad,
                                                                            max_errors, repeats):
    """Protection proved: the staged salvage and the upsert on parallel streams keep the record
    path's outcome; a key repeated within a batch or across batches ends with its last row."""
    assert_same(outcomes(isettings, db, shape, big_file(400, bad, repeats), max_errors))


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad=st.sets(st.integers(1, 150), max_size=8), max_errors=st.sampled_from([2, 1000]),
       seed=st.integers(0, 100))
def test_the_wide_shape_gives_one_outcome_in_every_mode_and_stream_count(isettings, db, bad, max_errors, seed):
    assert_same(outcomes(isettings, db, "e-wide", wide_file(150, bad, seed), max_errors))


def test_an_upsert_of_a_dirty_file_ends_with_the_last_row_of_each_key_and_rejects_only_bad_rows(isettings, db):
    """The staged salvage (screened rows, triage, one INSERT per batch) on many batches, with
    keys repeated across batches: every good row lands once, updated rows take the file's values."""
    bad = {i for i in range(5, 400, 37)}
    results = outcomes(isettings, db, "d-upsert", big_file(400, bad, [10, 300, 11]), 1000)
    assert_same(results)
    state, imported, rejected_count = results[0][1:4]
    assert (state, rejected_count) == ("SUCCESS", len(bad))
    table = dict((r[0], r) for r in results[0][6])
    assert len(table) == 400 - len([i for i in bad if i % 2]) and table[300][1] == "again 300"
    assert table[2][1] == "name 2" and all(table[i][1] == f"before {i}" for i in bad if i % 2 == 0)


def test_skip_keeps_the_first_row_of_a_key_when_the_first_is_a_suspect_the_screen_loads_last(isettings, db):
    """Protection proved: the screen loads the rows it vouches for before the suspects it
    salvages, so in the staging table a key's later row would come first and ``skip`` would
    keep it; such batches take the record path, which keeps the file's first row."""
    data = b"id,name,amount,note\n1,bad,x,\n2,first,1e1,a\n2,second,5.00,b\n3,third,1.00,c\n"
    rec, _ = run_import(isettings, data, "big", max_errors=10, options={"on_conflict": "skip"})
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", 2, 1)
    assert rows(db, "SELECT id, name FROM big ORDER BY id") == [(2, "first"), (3, "third")]


def test_a_resumable_import_past_max_errors_reports_the_same_rejects_on_any_number_of_streams(isettings, db):
    """Protection proved: once ``max_errors`` is passed, every later batch is counted alone
    against the committed prefix and rolled back, on one stream as on several; a key repeated
    after the failure point (300) is no duplicate, one repeated from the committed prefix (1) is."""
    bad = {2, 3, 50, 60}  # the limit (3) is passed in the batch holding rows 50 and 60
    results = outcomes(isettings, db, "b-pk", big_file(400, bad, [1, 300]), 3)
    assert_same(results)
    state, imported, rejected_count = results[0][1:4]
    assert (state, rejected_count) == ("FAILURE", len(bad) + 1)
    assert 0 < imported < 50  # the batches before row 50, committed
    lines = [r[0] for r in results[0][5]]  # rows 2, 3, 50, 60 (two-line records shift them), the repeat of 1
    assert lines == [3, 4, 58, 69, 454] and "duplicate key" in results[0][5][-1][-1]
