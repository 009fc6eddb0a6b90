"""The chaos run's quick mode (`make chaos CHAOS_QUICK=1`) inside `make test`: kill -9 every service once and
restart the broker twice while clients send a few hundred messages; not one accepted message may be lost.

Duplicates are printed, not asserted (at least once delivery may repeat a message; the figures of the full run
are the ones to judge); nothing about timing is asserted.
"""

from pathlib import Path

import pytest

from bench.chaos.config import quick_config
from bench.chaos.report import one_table
from bench.chaos.run import run

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


@pytest.mark.timeout(300)
async def test_quick_chaos_loses_no_accepted_message(tmp_path: Path) -> None:
    [result] = await run(quick_config(workdir=tmp_path))
    print("\n" + one_table(result))  # noqa: T201 - the figures, for the test log (pytest -s / -rA)
    assert result.accepted > 0, result.steps
    assert not result.exited, result.exited
    assert result.broker_restarts == 2
    assert all(result.kills.get(name) == 1 for name in ("ingress", "queue-manager", "dns-resolver", "delivery-worker"))
    assert result.lost == [], f"lost {len(result.lost)} accepted messages; logs in {tmp_path}"
