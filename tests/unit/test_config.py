"""Settings from IMPORTD_* variables."""

from pathlib import Path

import pytest

from importd.config import Settings


def test_defaults_point_at_localhost():
    s = Settings.from_env({})
    assert "127.0.0.1:5672" in s.broker_url and "127.0.0.1" in s.database_url
    assert s.queue_list == ["import_queue", "bulk_ops_queue", "default"]
    assert s.concurrency == 4 and s.prefetch == 1 and s.heartbeat_s == 30


def test_environment_and_overrides_are_typed():
    s = Settings.from_env({"IMPORTD_CONCURRENCY": "2", "IMPORTD_UPLOAD_DIR": "/x", "IMPORTD_TABLES": "a, b"},
                          log_level="debug")
    assert s.concurrency == 2 and s.upload_dir == Path("/x") and s.table_list == ["a", "b"]
    assert s.log_level == "debug"


def test_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="IMPORTD_CONCURRENCY"):
        Settings.from_env({"IMPORTD_CONCURRENCY": "many"})
