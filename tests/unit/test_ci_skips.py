"""With CI=true a skipped test fails the run (tests/support/ci.py); without it, it stays a skip."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

def test_needs_a_tool():
    pytest.skip("tool missing")

@pytest.mark.xfail(reason="known")
def test_known_bug():
    assert False

def test_fine():
    pass
"""


@pytest.mark.parametrize(("ci", "failed", "skipped"), [("true", 1, 0), ("", 0, 1)])
def test_a_skip_fails_only_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                 ci: str, failed: int, skipped: int):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest('pytest_plugins = ["tests.support.ci"]')
    pytester.makepyfile(SKIPPING)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=failed, skipped=skipped, xfailed=1)
    if failed:
        result.stdout.fnmatch_lines(["*skipped in CI (CI=true)*tool missing*"])
