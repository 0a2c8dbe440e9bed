"""The one retry policy: exponential backoff with full jitter, Retry-After honoured.

Waits are persisted in `next_attempt_at`; only waits up to `short_wait_s` ride a Celery
countdown (a long countdown on Redis outlives the visibility timeout and is redelivered).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

_rng = random.SystemRandom()


def backoff_seconds(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**(attempt-1))), never below Retry-After."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    delay = (rng or _rng).uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def next_attempt(now: datetime, delay: float) -> datetime:
    return now + timedelta(seconds=delay)
