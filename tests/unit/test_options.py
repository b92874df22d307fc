"""Import options are checked once, the same way for the API, the CLI and the worker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from importd.imports.options import JobArgsError, job_from_args, normalize
from importd.imports.run import options_of
from importd.imports.store import JobRecord
from importd.worker.messages import Job


def test_options_are_normalized_with_their_defaults():
    assert normalize({"delimiter": "\\t", "conflict_key": "a, b", "on_conflict": "update"}, max_errors="3") == {
        "delimiter": "\t", "conflict_key": ["a", "b"], "on_conflict": "update", "max_errors": 3,
        "validate_only": False}


@pytest.mark.parametrize(("options", "problem"), [
    ({"delimter": ","}, "unknown options: delimter"),
    ({"delimiter": ",,"}, "delimiter must be one ASCII character"),
    ({"delimiter": '"'}, "delimiter must be one ASCII character"),
    ({"encoding": "utf-16"}, "unsupported encoding"),
    ({"on_conflict": "update"}, "on_conflict update needs conflict_key"),
    ({"max_errors": -1}, "max_errors must be between 0 and"),
    ({"max_errors": True}, "max_errors must be an integer"),
    ({"validate_only": "yes"}, "validate_only must be true or false"),
    ({"columns": {"a": 1}}, "columns must map header names to column names"),
])
def test_bad_options_are_refused_with_the_reason(options, problem):
    with pytest.raises(JobArgsError, match=problem):
        normalize(options)


def test_a_column_mapped_to_null_is_kept_as_null_meaning_ignore_the_field():
    assert normalize({"columns": {"Notes": None, "Name": "name"}})["columns"] == {"Notes": None, "Name": "name"}


def test_submit_ignore_sends_null_for_each_header_it_names_and_map_its_column():
    import argparse

    from importd.imports.commands import enqueue

    parser = argparse.ArgumentParser()
    enqueue.add_arguments(parser)
    args = parser.parse_args(["f.csv", "--table", "t", "--map", "Full Name=name", "--ignore", "Notes", "--ignore", ""])
    assert normalize(enqueue._options(args))["columns"] == {"Full Name": "name", "Notes": None, "": None}
    assert "columns" not in enqueue._options(parser.parse_args(["f.csv", "--table", "t"]))


def test_a_message_without_job_row_becomes_a_job_record():
    rec = job_from_args(Job("j1", "import.csv", {"file": "/nowhere.csv", "table": "t", "mode": "resumable",
                                                 "max_errors": 2, "options": {"delimiter": ";"}}, priority=12))
    assert (rec.id, rec.target_table, rec.mode, rec.file_size, rec.priority) == ("j1", "t", "resumable", None, 10)
    assert rec.options == {"delimiter": ";", "max_errors": 2, "validate_only": False}
    with pytest.raises(JobArgsError, match="args.mode must be one of atomic, resumable"):
        job_from_args(Job("j2", "import.csv", {"file": "f", "table": "t", "mode": "fast"}))


def test_job_options_take_limits_from_settings_unless_overridden():
    settings = Settings(max_line_bytes=100, max_field_bytes=50, import_batch_bytes=1000)
    opts = options_of(JobRecord(id="j", options={"max_field_bytes": 500}), settings)
    assert (opts.load.max_line_bytes, opts.load.max_field_bytes, opts.load.batch_bytes) == (100, 100, 1000)
    assert (opts.max_errors, opts.validate_only, opts.delimiter) == (0, False, None)


#: Text a job row cannot hold: NUL (PostgreSQL's text and jsonb refuse it), lone surrogates (no
#: UTF-8 encoder takes them), past the length bound.
UNSTORABLE_TEXT = ["a\x00b", "\x00", "\ud800", "x\udfff", "z" * 5000]


@pytest.mark.parametrize("text", UNSTORABLE_TEXT)
@pytest.mark.parametrize("place", ["table", "file", "object.key", "columns.key", "columns.value", "conflict_key"])
def test_text_a_job_row_cannot_hold_is_a_bad_argument_wherever_it_is(text: str, place: str):
    """Issue 12 item 2 (wrong types at every field): such text in a message without a job row
    reached PostgreSQL, whose refusal was then acked as the FAILURE of a job that had no row
    (the message was lost), or, as a client-side UnicodeEncodeError, retried four times."""
    args: dict[str, Any] = {"file": "/x.csv", "table": "people"}
    if place == "object.key":
        args = {"object": {"key": text}, "table": "people"}
    elif place.startswith("columns"):
        args["options"] = {"columns": {text: "id"} if place == "columns.key" else {"id": text}}
    elif place == "conflict_key":
        args["options"] = {"conflict_key": [text]}
    else:
        args[place] = text
    with pytest.raises(JobArgsError):
        job_from_args(Job("j1", "import.csv", args))


@pytest.mark.parametrize(("options", "problem"), [
    ({"delimiter": "\x00"}, "delimiter must be one ASCII character other than a quote, newline or NUL"),
    ({"batch_bytes": 10**20}, "batch_bytes must be between 1 and"),  # OverflowError mid-run: retried as transient
    ({"max_line_bytes": "9" * 30}, "max_line_bytes must be between 1 and"),
    ({"max_field_bytes": 2**31}, "max_field_bytes must be between 1 and"),
    ({"max_errors": 2**63}, "max_errors must be between 0 and"),
])
def test_values_no_run_can_use_are_refused_up_front(options, problem):
    with pytest.raises(JobArgsError, match=problem):
        normalize(options)


@pytest.mark.parametrize("obj", [{"key": "k", "size": 2**63}, {"key": "k", "sha256": "\x00"},
                                 {"key": "k", "sha256": "not-hex"}])
def test_an_object_a_job_row_cannot_describe_is_a_bad_argument(obj: dict[str, Any]):
    with pytest.raises(JobArgsError):
        job_from_args(Job("j1", "import.csv", {"object": obj, "table": "people"}))


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(UNSTORABLE_TEXT + ["people", "atomic", "resumable", "k.csv", "update", ",", "utf-8"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6) | st.sampled_from(
        ["key", "size", "sha256", "columns", "conflict_key", "delimiter", "id", "\x00"]), inner, max_size=3),
    max_leaves=10)
_ARGS = st.fixed_dictionaries({}, optional={
    "table": _VALUES, "file": _VALUES, "object": _VALUES, "mode": _VALUES, "max_errors": _VALUES,
    "validate_only": _VALUES, "options": st.dictionaries(st.sampled_from(sorted(
        ["max_errors", "validate_only", "delimiter", "encoding", "columns", "on_conflict", "conflict_key",
         "max_line_bytes", "max_field_bytes", "batch_bytes"])), _VALUES, max_size=4) | _VALUES})


def _storable(value: Any) -> bool:
    text = json.dumps(value, allow_nan=False)  # raises on NaN or Infinity
    return "\\u0000" not in text and all(_encodes(s) for s in _strings(value))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_ARGS)
def test_any_arguments_make_a_storable_job_row_or_a_bad_argument(args: dict[str, Any]):
    """Property of the class: whatever a message's args hold, job_from_args raises JobArgsError
    (dead-lettered as bad-args) or returns a row every field of which PostgreSQL takes."""
    try:
        rec = job_from_args(Job("j1", "import.csv", args))
    except JobArgsError:
        return
    assert _storable(rec.options) and _storable([rec.target_table, rec.file_path, rec.checksum])
    assert rec.file_size is None or 0 <= rec.file_size < 2**63
