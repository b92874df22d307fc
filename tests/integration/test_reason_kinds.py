"""The dry run's groups are few: PostgreSQL's own messages for any values of a column's type
fall into a handful of kinds once :func:`importd.imports.rejectfile.reason_kind` takes the value
out, wherever the message puts it (``value "3271041745" is out of range for type integer`` made
one group per value, so a file with thousands of out-of-range numbers filled the 50 groups)."""

from __future__ import annotations

from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from importd.imports import rejectfile, store
from importd.imports.copy import cells

TYPES = ["integer", "smallint", "bigint", "oid", "double precision", "real", "numeric(6,2)", "date",
         "timestamp with time zone", "time", "interval", "boolean", "uuid", "inet", "bit(3)", "money",
         "int4range", "integer[]", "point"]
NUMBERISH = st.builds(lambda n, tail: f"{n}{tail}", st.integers(-10**40, 10**40),
                      st.sampled_from(["", "e400", "e-400", ".5", "1", ",5"]))
DATEISH = st.builds(lambda y, m, d, h, z: f"{y}-{m}-{d} {h}:00 {z}", st.integers(0, 300000), st.integers(0, 20),
                    st.integers(0, 40), st.integers(0, 30),
                    st.sampled_from(["UTC", "+99", "-15", "Zone/X", "e400", "CET", ""]))
VALUES = st.lists(st.one_of(st.text(min_size=1, max_size=12), NUMBERISH, DATEISH), min_size=50, max_size=200)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=VALUES)
def test_any_values_refused_by_a_type_fall_into_a_few_kinds_that_name_no_value(isettings: Settings,
                                                                               values: list[str]) -> None:
    values = [v.replace("\x00", "") or "x" for v in values]
    with store.connect(isettings) as conn, conn.transaction():
        for pg_type in TYPES:
            errors = _errors(conn, values, pg_type)
            kinds = {rejectfile.reason_kind(message) for _, _, message in errors}
            assert len(kinds) <= 5, (pg_type, kinds)
            for number, _state, message in errors:
                kind = rejectfile.reason_kind(message)
                assert len(kind) <= rejectfile.MAX_REASON_CHARS
                value = values[number - 1]
                assert f'"{value}"' not in kind, (value, message, kind)


def _errors(conn: psycopg.Connection[Any], values: list[str], pg_type: str) -> list[tuple[int, str, str]]:
    found = cells.cast_errors(conn, values, [pg_type] * len(values))
    assert found is not None
    return found
