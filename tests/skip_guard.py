"""pytest plugin (loaded by tests/conftest.py): skips are counted always, and fail a CI run unless allowed.

Every skip (at collection, in setup, in the test) is recorded with its reason. The end of the run
prints how many tests were skipped and why. When the environment variable CI is set (not "false"
or "0"), a skip whose node id is not in tests/allowed_skips.py's ALLOWED_SKIPS turns the run's exit
status into 1 (tests failed), with the list of those skips and where to allow one.
"""

from __future__ import annotations

import fnmatch
import os

import pytest

from tests import allowed_skips

ALLOWLIST_FILE = "tests/allowed_skips.py"


def ci_run(environ=None) -> bool:
    """True when running under CI (the runner sets CI=true)."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no")


def is_allowed(nodeid: str, allowed: dict[str, str]) -> bool:
    return any(nodeid == pattern or fnmatch.fnmatchcase(nodeid, pattern) for pattern in allowed)


def skip_reason(report) -> str:
    """The reason pytest gives for a skip report (its longrepr is (file, line, 'Skipped: reason'))."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class SkipGuard:
    def __init__(self) -> None:
        self.skips: dict[str, str] = {}

    def _record(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.setdefault(report.nodeid, skip_reason(report))

    def pytest_runtest_logreport(self, report) -> None:
        self._record(report)

    def pytest_collectreport(self, report) -> None:
        self._record(report)

    def unlisted(self) -> dict[str, str]:
        return {n: r for n, r in self.skips.items() if not is_allowed(n, allowed_skips.ALLOWED_SKIPS)}

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session) -> None:
        if ci_run() and self.unlisted() and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        write = terminalreporter.write_line
        unlisted = self.unlisted()
        terminalreporter.section("skips")
        write(f"{len(self.skips)} skipped ({len(self.skips) - len(unlisted)} allowed in {ALLOWLIST_FILE})")
        for nodeid, reason in sorted(self.skips.items()):
            write(f"  {'allowed ' if nodeid not in unlisted else ''}SKIPPED {nodeid}: {reason}")
        if unlisted and ci_run():
            write(
                f"CI: {len(unlisted)} skipped test(s) not listed in {ALLOWLIST_FILE}, so this run fails: provide what "
                f"they need (`make test` prepares the sample, weights, S3 server and Chromium) or list them there "
                f"with the reason",
                red=True, bold=True,
            )


def pytest_configure(config) -> None:
    if not config.pluginmanager.has_plugin("fruits-skip-guard"):
        config.pluginmanager.register(SkipGuard(), "fruits-skip-guard")
