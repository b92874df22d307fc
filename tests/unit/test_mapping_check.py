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
@given(header=st.lists(NAMES, min_size=1, max_size=5),
       columns=st.dictionaries(NAMES, NAMES | st.none(), max_size=4))  # None: the field is ignored
def test_a_mapping_the_check_accepts_gives_the_import_no_mapping_problem(header: list[str],
                                                                          columns: dict[str, str | None]) -> None:
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


def test_a_field_mapped_to_null_is_ignored_and_one_the_table_lacks_is_refused_unless_it_is() -> None:
    """Ignoring is explicit: an extra or empty-named field is refused until mapped to null."""
    header = ["id", "Notes", "name", ""]
    try:
        targets.map_header(TARGET, header, {"Notes": None})
        raise AssertionError("the empty name was not refused")
    except targets.TargetError as exc:
        assert exc.problems == ["unknown header columns for public.t: (empty name, column 4)"]
    assert targets.map_header(TARGET, header, {"notes": None, "": None}) == ["id", "", "name", ""]
    assert targets.map_header(TARGET, ["id", "x", "x"], {"X": None}) == ["id", "", ""]  # twice, both ignored


def test_the_proposal_suggests_ignoring_an_empty_named_field_without_values_and_keeps_explicit_nulls() -> None:
    proposal = mappings.propose(TARGET, ["id", "Notes", ""], {"Notes": None}, blank={2})
    assert [(f["column"], f["how"], f["ignored"]) for f in proposal["fields"]] == [
        ("id", "auto", False), (None, "explicit", True), (None, "suggested", True)]
    assert proposal["columns"] == {"Notes": None, "": None}
    assert mappings.propose(TARGET, ["id", ""], None, blank=set())["fields"][1]["how"] == "none"
    assert mappings.check(TARGET, ["id", "Notes", ""], {"Notes": None, "": None}) == []


def test_ignoring_empty_names_is_suggested_only_when_none_of_them_holds_a_value() -> None:
    """A mapping names fields by name: ignoring "" would drop every empty-named field."""
    from importd.imports.preview import _blank

    assert _blank(["id", "", "name", ""], [(0, b"1,,a,\n"), (6, b'2,"",b\n')], b",") == {1, 3}
    assert _blank(["id", "", "name", ""], [(0, b"1,x,a,\n")], b",") == set()
    assert _blank(["id", "name"], [(0, b"1,a\n")], b",") == set()
