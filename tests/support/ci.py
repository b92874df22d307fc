"""In CI a skipped test fails: a test whose tool or service is missing proves nothing, and a
skip in a long run is easy not to see.

CI sets ``CI=true`` (GitHub Actions, GitLab CI and most others do); locally a skip stays a
skip, with its reason. Expected failures (``xfail``) are not skips and are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

#: Environment variable that turns skips into failures when it is "true" or "1".
CI_ENV = "CI"


def strict() -> bool:
    return os.environ.get(CI_ENV, "").strip().lower() in ("true", "1", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if strict() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI ({CI_ENV}=true), which fails the run: {reason}"
