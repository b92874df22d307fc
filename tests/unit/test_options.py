"""Import options are checked once, the same way for the API, the CLI and the worker."""

from __future__ import annotations

import pytest

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
    ({"max_errors": -1}, "max_errors must be >= 0"),
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
