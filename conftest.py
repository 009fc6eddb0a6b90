"""Plugins for every test of the repository (services/*/tests and tests/), the order files run in, and the root
logger's level restored after each test."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ("tests.harness.no_skips", "tests.harness.broker_fixtures")

ROOT = Path(__file__).parent
SLOW_FIRST = (
    "tests/e2e/test_chaos.py",
    "tests/e2e/",
    "tests/chart/test_monitoring_e2e.py",
    "tests/chart/",
    "tests/integration/",
    "services/tracker/tests/test_admin_ops.py",
    "services/delivery-worker/tests/test_worker_attempt_limits.py",
    "services/common/tests/test_events_stream_reader.py",
    "services/tracker/tests/",
    "services/webhooks/tests/test_webhooks_broker.py",
    "tests/test_bench_stages_broker.py",
)
"""Where the slow files are, slowest first. `make test` runs three workers that each take a whole file at a
time (--dist loadfile), in collection order (--no-loadscope-reorder: xdist would otherwise order files by
how many tests they hold): a long end-to-end file handed out last keeps one worker busy alone for minutes
while the others have nothing left, so the slow files go first and the many short ones fill in behind them.
The service files named took 20-50 s each in a `--durations=0` run of the whole suite."""


def slowness_rank(path: str) -> int:
    """The place of a test file (relative to the repository) in SLOW_FIRST; everything else after."""
    for rank, prefix in enumerate(SLOW_FIRST):
        if path.startswith(prefix):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow files first; files and tests otherwise keep their order (the sort is stable, by file)."""

    def rank(item: pytest.Item) -> int:
        try:
            return slowness_rank(item.path.relative_to(ROOT).as_posix())
        except ValueError:
            return len(SLOW_FIRST)

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def root_logger_level_restored() -> Iterator[None]:
    """The root logger's level as it was before the test. A test that starts a service in-process
    (`Service.start` calls `setup_logging`) leaves the root at INFO, so a later test in the same worker saw INFO
    records its caplog did not expect: whether it passed depended on which file ran before it."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)
