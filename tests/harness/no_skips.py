"""A pytest plugin (`-p tests.harness.no_skips` in pyproject's addopts): a skipped test fails the run.

A test that cannot run here has to fail and say why, or it hides a gap behind a green run.
Expected failures (xfail, strict) are not skips and stay allowed.
"""

import pytest


class SkipCounter:
    def __init__(self) -> None:
        self.skipped: list[str] = []

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append(report.nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.skipped and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.skipped:
            terminalreporter.write_line(
                f"{len(self.skipped)} test(s) skipped, which fails the run (tests/harness/no_skips.py): "
                + ", ".join(self.skipped),
                red=True,
            )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipCounter(), "kubemta-no-skips")
