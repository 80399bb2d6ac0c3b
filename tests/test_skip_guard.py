"""The skip guard (tests/skip_guard.py): skips are counted, and under CI an unlisted one fails the run."""

from __future__ import annotations

import pytest

from tests import allowed_skips
from tests.skip_guard import ci_run, is_allowed

SUITE = """
import pytest

def test_runs():
    assert True

def test_skipped_in_the_test():
    pytest.skip("no sample here")

@pytest.fixture
def needs_data():
    pytest.skip("no weights here")

def test_skipped_by_its_fixture(needs_data):
    pass
"""


@pytest.fixture
def inner(pytester):
    pytester.makepyfile(test_inner=SUITE)
    return lambda: pytester.runpytest_inprocess("-p", "tests.skip_guard", "-p", "no:cacheprovider")


def test_under_ci_an_unlisted_skip_fails_the_run_and_says_where_to_list_it(inner, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = inner()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "*2 skipped (0 allowed in tests/allowed_skips.py)*",
        "*SKIPPED test_inner.py::test_skipped_by_its_fixture: no weights here*",
        "*SKIPPED test_inner.py::test_skipped_in_the_test: no sample here*",
        "*CI: 2 skipped test(s) not listed in tests/allowed_skips.py, so this run fails*",
    ])


def test_under_ci_listed_skips_pass(inner, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(allowed_skips, "ALLOWED_SKIPS", {"test_inner.py::test_skipped_*": "a reason"})
    result = inner()
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*2 skipped (2 allowed in tests/allowed_skips.py)*"])


def test_outside_ci_skips_are_counted_and_the_run_passes(inner, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = inner()
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*2 skipped (0 allowed in tests/allowed_skips.py)*"])
    assert "so this run fails" not in result.stdout.str()


def test_ci_detection_and_allowlist_patterns():
    assert ci_run({"CI": "true"}) and ci_run({"CI": "1"})
    assert not ci_run({}) and not ci_run({"CI": "false"}) and not ci_run({"CI": "0"})
    assert is_allowed("tests/a.py::test_x", {"tests/a.py::*": "r"})
    assert not is_allowed("tests/b.py::test_x", {"tests/a.py::*": "r"})


def test_every_allowed_skip_gives_its_reason():
    assert all(isinstance(reason, str) and reason.strip() for reason in allowed_skips.ALLOWED_SKIPS.values())
