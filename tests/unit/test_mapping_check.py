"""A mapping ``PUT /api/mappings`` accepts is one the import can apply: whatever it maps, the
header check of the import finds no column twice, no unknown or generated column in it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from importd.imports import mappings, targets
from importd.imports.copy.spec import Column, Target

TARGET = Target("public", "t", {
    "id": Column("id", "bigint", True, False, False),
    "name": Column("name", "text", False, False, False),
    "Name": Column("Name", "text", False, False, False),
    "qty": Column("qty", "integer", False, False, False),
    "total": Column("total", "bigint", False, True, True),
})
NAMES = st.sampled_from(["id", "ID", " id ", "name", "Name", "NAME", "qty", "total", "x", "E-mail", "", "Имя"])


@settings(max_examples=500)
@given(header=st.lists(NAMES, min_size=1, max_size=5), columns=st.dictionaries(NAMES, NAMES, max_size=4))
def test_a_mapping_the_check_accepts_gives_the_import_no_mapping_problem(header: list[str],
                                                                          columns: dict[str, str]) -> None:
    problems = mappings.check(TARGET, header, columns)
    try:
        targets.map_header(TARGET, header, columns)
        refused: list[str] = []
    except targets.TargetError as exc:
        refused = exc.problems
    mapped_to_total = any(v == "total" for v in columns.values())  # a header named total is the file's doing
    about_mapping = [p for p in refused if p.startswith("several header columns map to")
                     or (mapped_to_total and p.startswith("column 'total'"))]
    if not problems:
        assert about_mapping == [], (header, columns, refused)
    if any(p.startswith("several header columns map to") for p in refused):
        assert problems, (header, columns, refused)
