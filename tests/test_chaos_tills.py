"""CI-sized chaos runs of what the tills and the sandboxes do: failing and slow APIs,
webhooks delivered three times out of order, one customer edited in two systems at once.
The runner, checker and sizes are those of tests/test_chaos.py."""

from __future__ import annotations

import pytest

from tests.test_chaos import run_and_check

RUNS = [
    ("sandbox_faults", "redis"),
    ("webhook_storm", "redis"),
    ("concurrent", "redis"),
]


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("scenario", "broker"), RUNS, ids=[f"{s}-{b}" for s, b in RUNS])
def test_chaos_scenario_converges_without_duplicates_or_lost_edits(scenario: str, broker: str) -> None:
    run_and_check(scenario, broker)
