"""The agreement checker reads through the same account budget as the bridge."""

from __future__ import annotations

import time

import pytest

from bridge.adapters.errors import RateLimitedError
from bridge.adapters.loyverse.tests.conftest import Env
from bridge.demo.checker import read_all


def test_a_spent_budget_is_waited_out_not_reported() -> None:
    env = Env(rate_limit_requests=4, rate_limit_window_s=1.5)
    try:
        made = [env.till({"name": f"Ann {n}", "email": f"a{n}@example.com"})["id"] for n in range(3)]
        # Another process of the same account spends the budget: its limiter is not ours.
        while env.http.get("/customers").status_code != 429:
            pass
        started = time.monotonic()
        records = read_all(env.adapter())
        waited = time.monotonic() - started
        assert sorted(r.external_id for r in records) == sorted(made)
        assert waited > 0.2  # it did wait for the window, it did not read through a 429
    finally:
        env.close()


def test_a_budget_that_never_comes_back_fails_after_the_patience() -> None:
    env = Env(rate_limit_requests=1, rate_limit_window_s=3600.0)
    try:
        env.http.get("/customers")
        with pytest.raises(RateLimitedError):
            read_all(env.adapter(), patience_s=1.0)
    finally:
        env.close()
