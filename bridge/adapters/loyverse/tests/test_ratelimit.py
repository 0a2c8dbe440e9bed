"""The shared request budget against real stores: memory, SQLite, Postgres and Redis."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from bridge.adapters.errors import RateLimitedError
from bridge.adapters.loyverse.ratelimit import (
    LocalStore,
    RedisStore,
    SharedRateLimiter,
    SQLStore,
    TokenStore,
    account_key,
    store_for_url,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("POSBRIDGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("POSBRIDGE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _service(name: str, host: str, port: int) -> None:
    if not _answers(host, port):
        if IN_CI:
            pytest.fail(f"{name} on {host}:{port} is required in CI")
        pytest.skip(f"{name} on {host}:{port} does not answer")


def _sqlite(tmp_path: Path) -> TokenStore:
    return SQLStore(create_engine(f"sqlite:///{tmp_path / 'rate.sqlite'}"))


def _postgres(tmp_path: Path) -> TokenStore:
    _service("Postgres", "127.0.0.1", 5432)
    return SQLStore(create_engine(PG_URL))


def _redis(tmp_path: Path) -> TokenStore:
    _service("Redis", "127.0.0.1", 6379)
    import redis

    return RedisStore(redis.Redis.from_url(REDIS_URL))


STORES: dict[str, Callable[[Path], TokenStore]] = {
    "memory": lambda _: LocalStore(),
    "sqlite": _sqlite,
    "postgres": pytest.param(_postgres, marks=pytest.mark.services),  # type: ignore[dict-item]
    "redis": pytest.param(_redis, marks=pytest.mark.services),  # type: ignore[dict-item]
}


@pytest.fixture(params=list(STORES.values()), ids=list(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TokenStore:
    factory: Callable[[Path], TokenStore] = request.param
    return factory(tmp_path)


@pytest.fixture
def account() -> str:
    return account_key(f"token-{uuid.uuid4()}")


def test_budget_is_spent_then_refilled_as_the_window_slides(store: TokenStore, account: str) -> None:
    assert [store.try_acquire(account, 3, 0.5) for _ in range(3)] == [None, None, None]
    wait = store.try_acquire(account, 3, 0.5)
    assert wait is not None
    assert 0 < wait <= 0.5
    time.sleep(wait + 0.02)
    # The burst left the window together, so the whole budget is back, and no more.
    assert [store.try_acquire(account, 3, 0.5) for _ in range(3)] == [None, None, None]
    assert store.try_acquire(account, 3, 0.5) is not None


def test_accounts_have_separate_budgets(store: TokenStore, account: str) -> None:
    other = account_key(f"token-{uuid.uuid4()}")
    assert store.try_acquire(account, 1, 10) is None
    assert store.try_acquire(account, 1, 10) is not None
    assert store.try_acquire(other, 1, 10) is None


def test_racing_workers_never_overspend(store: TokenStore, account: str) -> None:
    granted: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        mine = sum(1 for _ in range(15) if store.try_acquire(account, 25, 30) is None)
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 25


def test_a_lowered_limit_takes_effect(store: TokenStore, account: str) -> None:
    for _ in range(4):
        assert store.try_acquire(account, 4, 30) is None
    assert store.try_acquire(account, 2, 30) is not None


def test_limiter_sleeps_until_a_token_frees_up(store: TokenStore, account: str) -> None:
    limiter = SharedRateLimiter(store, limit=3, window_s=0.3, margin_s=0.0)
    started = time.monotonic()
    for _ in range(7):
        limiter.acquire(account)
    elapsed = time.monotonic() - started
    # 3 at once, 3 after one window, 1 after two windows.
    assert 0.6 <= elapsed < 1.5


def test_limiter_hands_long_waits_back_to_the_engine(account: str) -> None:
    slept: list[float] = []
    limiter = SharedRateLimiter(LocalStore(), limit=1, window_s=300, max_wait_s=30, sleep=slept.append)
    limiter.acquire(account)
    with pytest.raises(RateLimitedError) as caught:
        limiter.acquire(account)
    assert caught.value.retry_after is not None
    assert 290 < caught.value.retry_after <= 315
    assert slept == []


def test_limiter_waits_when_the_wait_is_short(account: str) -> None:
    slept: list[float] = []
    limiter = SharedRateLimiter(
        LocalStore(),
        limit=1,
        window_s=0.2,
        max_wait_s=30,
        margin_s=0.0,
        sleep=lambda s: (slept.append(s), time.sleep(s)),
    )
    limiter.acquire(account)
    limiter.acquire(account)
    assert len(slept) == 1
    assert 0 < slept[0] <= 0.25


def test_sql_store_creates_its_table_and_is_shared_across_instances(tmp_path: Path, account: str) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    first, second = SQLStore(create_engine(url)), SQLStore(create_engine(url))
    assert first.try_acquire(account, 2, 30) is None
    assert "loyverse_rate_tokens" in inspect(create_engine(url)).get_table_names()
    assert second.try_acquire(account, 2, 30) is None
    assert first.try_acquire(account, 2, 30) is not None
    assert second.try_acquire(account, 2, 30) is not None


def test_store_for_url_picks_the_backend_and_shares_it(tmp_path: Path) -> None:
    assert isinstance(store_for_url(""), LocalStore)
    assert store_for_url("") is store_for_url("")
    sqlite_url = f"sqlite:///{tmp_path / 'picked.sqlite'}"
    assert isinstance(store_for_url(sqlite_url), SQLStore)
    assert isinstance(store_for_url("redis://127.0.0.1:6379/0"), RedisStore)


def test_account_key_does_not_reveal_the_token() -> None:
    key = account_key("super-secret-token")
    assert "secret" not in key
    assert len(key) == 32
    assert key == account_key("super-secret-token")
