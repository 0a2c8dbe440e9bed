"""A request budget shared by every worker that talks to one Loyverse account.

Loyverse allows 300 requests per 300 s per account, answers 429 past that and sends no
headers saying how close we are. Learning the budget from 429s wastes requests and
stalls every worker at once, so each HTTP call takes a token here first.

The budget is a sliding window, the same rule the vendor (and our sandbox) applies: at
most `limit` requests in any `window_s`. A token bucket would allow a burst of `limit`
plus the refill inside one window, which a sliding-window server refuses.

Stores (pick with `rate_limit_url`):
- `LocalStore`: one process only (tests, the demo, a single worker process).
- `SQLStore`: SQLAlchemy Core on `loyverse_rate_tokens`, created when missing. The table
  holds `limit` slots per account with the time each was last spent; taking a token is
  one atomic `UPDATE ... WHERE used_at <= now - window` of the stalest slot, so no slot is
  spent twice within a window however many workers race (SQLite and Postgres).
- `RedisStore`: a Lua script over a sorted set per account, timed by the Redis clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from bridge.adapters.errors import RateLimitedError

TABLE_NAME = "loyverse_rate_tokens"


def account_key(token: str) -> str:
    """The budget is per account (token); the key must not reveal the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


class TokenStore(Protocol):
    def try_acquire(
        self, account: str, limit: int, window_s: float, token: str | None = None
    ) -> float | None:
        """Spend one token: None when spent, else seconds until one may be free (>= 0)."""
        ...

    def complete(self, account: str, token: str) -> None:
        """The request that spent `token` has its answer: count it from now.

        The vendor counts a request when it arrives, which is some time after we spent
        the token: under load (a burst queueing at the server) much later. Re-stamping the
        spend when the answer is in makes our window end no earlier than the vendor's.
        """
        ...


class LocalStore:
    """Sliding window in process memory, shared by every adapter of the process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[str, deque[tuple[float, str | None]]] = {}
        self._lock = threading.Lock()

    def try_acquire(
        self, account: str, limit: int, window_s: float, token: str | None = None
    ) -> float | None:
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(account, deque())
            while hits and hits[0][0] <= now - window_s:
                hits.popleft()
            if len(hits) < limit:
                hits.append((now, token))
                return None
            # With a lowered limit more than `limit` hits can be held: the one that must
            # expire is the len-limit'th oldest, not the oldest.
            return max(0.0, hits[len(hits) - limit][0] + window_s - now)

    def complete(self, account: str, token: str) -> None:
        now = self._clock()
        with self._lock:
            hits = self._hits.get(account)
            if not hits:
                return
            kept = [(now, t) if t == token else (at, t) for at, t in hits]
            self._hits[account] = deque(sorted(kept, key=lambda hit: hit[0]))


class SQLStore:
    """Slots in a database table; see the module docstring for why this is race-free."""

    def __init__(self, engine: Engine, table_name: str = TABLE_NAME) -> None:
        self.engine = engine
        self.metadata = MetaData()
        self.table = Table(
            table_name,
            self.metadata,
            Column("account", String(64), primary_key=True),
            Column("slot", Integer, primary_key=True, autoincrement=False),
            # Wall-clock epoch seconds: workers on several hosts must agree on time, and
            # the limiter's margin absorbs ordinary NTP skew.
            Column("used_at", Float, nullable=False),
        )
        self._ready = False
        self._seeded: set[tuple[str, int]] = set()
        self._spent: dict[str, tuple[str, int, float]] = {}
        self._lock = threading.Lock()

    def _ensure_table(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                self.metadata.create_all(self.engine, checkfirst=True)
            except (OperationalError, ProgrammingError, IntegrityError):
                # Another process created it between our check and our CREATE.
                self.metadata.create_all(self.engine, checkfirst=True)
            self._ready = True

    def _seed(self, account: str, limit: int) -> None:
        if (account, limit) in self._seeded:
            return
        self._ensure_table()
        t = self.table
        with self.engine.begin() as conn:
            have = set(conn.execute(select(t.c.slot).where(t.c.account == account)).scalars())
            missing = [{"account": account, "slot": s, "used_at": 0.0} for s in range(limit) if s not in have]
        for row in missing:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(t).values(**row))
            except IntegrityError:
                pass  # a concurrent worker seeded this slot
        self._seeded.add((account, limit))

    def try_acquire(
        self, account: str, limit: int, window_s: float, token: str | None = None
    ) -> float | None:
        self._seed(account, limit)
        t = self.table
        now = time.time()
        threshold = now - window_s
        stalest = (
            select(t.c.slot)
            .where(t.c.account == account, t.c.slot < limit, t.c.used_at <= threshold)
            .order_by(t.c.used_at)
            .limit(1)
            # Postgres: concurrent workers take different slots instead of queueing on
            # one row; SQLite ignores it (its writers are serialised anyway).
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(t)
                .where(t.c.account == account, t.c.slot == stalest, t.c.used_at <= threshold)
                .values(used_at=now)
                .returning(t.c.slot)
            ).scalar()
            if taken is not None:
                if token is not None:
                    with self._lock:
                        self._spent[token] = (account, int(taken), now)
                return None
            oldest = conn.execute(
                select(func.min(t.c.used_at)).where(t.c.account == account, t.c.slot < limit)
            ).scalar()
        if oldest is None:
            return 0.0
        return max(0.0, float(oldest) + window_s - now)

    def complete(self, account: str, token: str) -> None:
        with self._lock:
            spent = self._spent.pop(token, None)
        if spent is None:
            return
        _account, slot, at = spent
        t = self.table
        with self.engine.begin() as conn:
            # Only if nobody took the slot since (they cannot within a window, but say so).
            conn.execute(
                update(t)
                .where(t.c.account == account, t.c.slot == slot, t.c.used_at == at)
                .values(used_at=time.time())
            )


_REDIS_SCRIPT = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window_us = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_us)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, math.ceil(window_us / 1000) + 1000)
  return -1
end
local due = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
local wait = tonumber(due[2]) + window_us - now
if wait < 0 then wait = 0 end
return wait
"""


# Re-stamp a spend with the Redis clock, only if it is still counted (XX: never re-add).
_REDIS_COMPLETE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
"""


class RedisStore:
    """A sorted set of spend times per account; the script runs atomically in Redis."""

    def __init__(self, client: Any, prefix: str = "posbridge:loyverse:rate:") -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_REDIS_SCRIPT)
        self._complete = client.register_script(_REDIS_COMPLETE)

    def try_acquire(
        self, account: str, limit: int, window_s: float, token: str | None = None
    ) -> float | None:
        result = int(
            self._script(
                keys=[self.prefix + account],
                args=[limit, int(window_s * 1_000_000), token or uuid.uuid4().hex],
            )
        )
        return None if result < 0 else result / 1_000_000

    def complete(self, account: str, token: str) -> None:
        self._complete(keys=[self.prefix + account], args=[token])


class SharedRateLimiter:
    """Blocks until a token is free, or hands a long wait back as RateLimitedError."""

    def __init__(
        self,
        store: TokenStore,
        *,
        limit: int,
        window_s: float,
        max_wait_s: float = 30.0,
        margin_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.limit = limit
        self.window_s = window_s
        # The vendor counts arrivals, we count departures: a request that left early and
        # one that left a window later but travelled faster can land inside one window.
        # A small margin on the window keeps that from ever costing a 429.
        self.margin_s = min(1.0, 0.05 * window_s) if margin_s is None else margin_s
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep

    @contextlib.contextmanager
    def spending(self, account: str) -> Iterator[float]:
        """Hold one token for the duration of a request; yields the seconds spent waiting."""
        token = uuid.uuid4().hex
        waited = self.acquire(account, token)
        try:
            yield waited
        finally:
            self.store.complete(account, token)

    def acquire(self, account: str, token: str | None = None) -> float:
        """Take one token for `account`; returns the seconds spent waiting."""
        started = self._clock()
        deadline = started + self.max_wait_s
        while True:
            wait = self.store.try_acquire(account, self.limit, self.window_s + self.margin_s, token)
            if wait is None:
                return self._clock() - started
            if self._clock() + wait > deadline:
                raise RateLimitedError(
                    f"loyverse request budget ({self.limit} per {self.window_s:g} s) spent; "
                    f"next token in {wait:.1f} s",
                    retry_after=wait,
                )
            # A few ms past the due time: waking exactly on it loses the race to the clock.
            self._sleep(wait + 0.002)


_stores_lock = threading.Lock()
_stores: dict[str, TokenStore] = {}


def store_for_url(url: str) -> TokenStore:
    """One store per URL per process, so all adapters of a process share it."""
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = _build_store(url)
        return store


def _build_store(url: str) -> TokenStore:
    if not url:
        return LocalStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        return RedisStore(redis.Redis.from_url(url))
    from bridge.store.db import get_engine

    return SQLStore(get_engine(url))
