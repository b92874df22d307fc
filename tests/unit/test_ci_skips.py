"""With CI=true a skipped test fails the run (tests/support/ci.py); without it, it stays a skip."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

def test_needs_a_tool():
    pytest.skip("tool missing")

@pytest.mark.skipif(True, reason="chromium missing")
def test_marked_skipif():
    pass

@pytest.fixture
def service():
    pytest.skip("service missing")

def test_needs_a_service(service):
    pass

@pytest.mark.xfail(reason="known")
def test_known_bug():
    assert False

def test_fine():
    pass
"""


# With CI=true the body's skip is a failure, the two setup skips are errors: each fails the run.
@pytest.mark.parametrize(("ci", "failed", "errors", "skipped"), [("true", 1, 2, 0), ("", 0, 0, 3)])
def test_a_skip_fails_only_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                 ci: str, failed: int, errors: int, skipped: int):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest('pytest_plugins = ["tests.support.ci"]')
    pytester.makepyfile(SKIPPING)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=failed, errors=errors, skipped=skipped, xfailed=1)
    assert result.ret == (1 if ci else 0)
    if failed:
        # a skip in the test body, a skipif mark and a skipping fixture (the last two skip at setup)
        result.stdout.fnmatch_lines_random(["*skipped in CI (CI=true)*tool missing*",
                                            "*skipped in CI (CI=true)*chromium missing*",
                                            "*skipped in CI (CI=true)*service missing*"])
