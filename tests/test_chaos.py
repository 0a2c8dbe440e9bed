"""CI-sized runs of every chaos scenario: the same runner and checker as `python -m chaos`,
with a few hundred changes instead of thousands (docs/reliability.md has the full runs).

Each run is a real stack in processes of its own (web, two workers, beat, five sandboxes
on ports, a private Redis or RabbitMQ node, a Postgres database) and fails on any
duplicate person in any system, any lost till edit, or no convergence within 60 s of
the faults stopping.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.harness import service_or_skip

CHANGES = 200
CUSTOMERS = 24  # enough that the 3 s between edits of one field seldom stalls the tills
POS_DOWN_S = 15.0  # five minutes in the full run, scaled down for CI

RUNS = [
    ("kill_worker", "redis"),
    ("broker_restart", "redis"),
    ("broker_restart", "rabbitmq"),
    ("sandbox_faults", "redis"),
    ("webhook_storm", "redis"),
    ("concurrent", "redis"),
    ("pos_down", "redis"),
]


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("scenario", "broker"), RUNS, ids=[f"{s}-{b}" for s, b in RUNS])
def test_chaos_scenario_converges_without_duplicates_or_lost_edits(scenario: str, broker: str) -> None:
    run_and_check(scenario, broker)


def run_and_check(scenario: str, broker: str) -> None:
    from chaos.run import run

    service_or_skip("Postgres", "127.0.0.1", 5432)
    server = "redis-server" if broker == "redis" else "rabbitmq-server"
    if shutil.which(server) is None:
        pytest.skip(f"{server} is not installed")
    result = run(scenario, CHANGES, broker, CUSTOMERS, POS_DOWN_S, seed=7)
    report = result.as_dict()
    print(json.dumps(report))
    # `concurrent` edits in pairs, so its last step may make one change more.
    assert CHANGES <= result.changes <= CHANGES + 1, report
    assert not result.errors, report
    assert result.duplicates == 0, report
    assert not result.lost_edits, report
    assert result.convergence_s is not None, report
    if scenario == "kill_worker":
        assert report["faults_injected"]["worker_kills"] >= 3, report
    if scenario == "broker_restart":
        assert report["faults_injected"]["broker_restarts"] >= 1, report
