"""The task table: what rate limit a worker applies to a task type."""

from importd.worker import tasks


def test_a_task_keeps_its_own_rate_limit_without_an_override_and_takes_the_override_otherwise():
    """IMPORTD_RATE_LIMIT is applied where the table is read, so the table is never rewritten
    by a worker's settings (it used to be, a process-wide write at child start)."""
    spec = tasks.get("import.csv")
    assert spec is not None and spec.rate_limit == "10/m"
    assert tasks.rate_limit_of(spec, "") == "10/m"
    assert tasks.rate_limit_of(spec, "5/s") == "5/s"
    for lifted in ("none", "NONE", "0", "off"):
        assert tasks.rate_limit_of(spec, lifted) is None
    assert tasks.get("import.csv") == spec
