"""The one place that decides what a failure means.

Adapters translate their vendor's protocol errors into these at the boundary
(`raise ... from err`); the engine only ever sees these types, and `classify` turns any
exception into a verdict the retry policy acts on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import httpx

T = TypeVar("T")

# In-place retries of one idempotent read: enough that a pass reading dozens of records
# through 30 % transient failures gets through, short enough that a vendor that is really
# down fails the pass within seconds and leaves the rest to the task-level retry.
READ_TRIES = 6
READ_PAUSE_S = 0.1
READ_MAX_PAUSE_S = 1.0


class AdapterError(Exception):
    """Base of everything an adapter raises on purpose."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(AdapterError):
    """Try again later: 429, 5xx, timeouts, connection loss, lock contention."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    pass


class LockContentionError(RetryableError):
    pass


class PermanentError(AdapterError):
    """The vendor refused the request for a reason retrying cannot fix (validation, 4xx)."""


class NotFoundError(PermanentError):
    pass


class ConflictError(AdapterError):
    """Optimistic concurrency: the record changed since the version we hold."""


class ChangedError(ConflictError):
    """A guarded update found the record changed since we last knew it, and wrote nothing.

    Carries the record as it was found, so the engine can merge it before trying again.
    """

    def __init__(self, message: str, current: object, *, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.current = current


class AuthError(AdapterError):
    """Credentials rejected. Pauses the target until a probe succeeds."""


class SignatureError(Exception):
    """A webhook whose signature (or secret path token) does not verify: answer 401."""


class PayloadError(Exception):
    """A webhook body that cannot be understood: answer 400/422 with this reason."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Verdict(StrEnum):
    RETRY = "retry"
    FAIL = "fail"
    AUTH = "auth"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Classified:
    verdict: Verdict
    reason: str
    status: int | None = None
    retry_after: float | None = None


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        from datetime import UTC, datetime

        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_for_status(status: int, reason: str, *, retry_after: float | None = None) -> AdapterError:
    """The generic HTTP status → error rule every adapter starts from."""
    if status in (401, 403):
        return AuthError(reason, status=status)
    if status == 404:
        return NotFoundError(reason, status=status)
    if status == 409:
        return ConflictError(reason, status=status)
    if status == 429:
        return RateLimitedError(reason, status=status, retry_after=retry_after)
    if status == 408 or status >= 500:
        return RetryableError(reason, status=status, retry_after=retry_after)
    return PermanentError(reason, status=status)


def classify(exc: BaseException) -> Classified:
    if isinstance(exc, AuthError):
        return Classified(Verdict.AUTH, str(exc), exc.status)
    if isinstance(exc, ConflictError):
        return Classified(Verdict.CONFLICT, str(exc), exc.status)
    if isinstance(exc, RetryableError):
        return Classified(Verdict.RETRY, str(exc), exc.status, exc.retry_after)
    if isinstance(exc, PermanentError):
        return Classified(Verdict.FAIL, str(exc), exc.status)
    if isinstance(exc, httpx.TimeoutException | httpx.TransportError):
        return Classified(Verdict.RETRY, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.HTTPStatusError):
        err = error_for_status(exc.response.status_code, str(exc))
        return classify(err)
    # Unknown exceptions are bugs or surprises; retrying is the safe default because
    # the delivery is bounded by max attempts and lands in `failed` with the reason.
    return Classified(Verdict.RETRY, f"{type(exc).__name__}: {exc}")


def retry_read(call: Callable[[], T], *, tries: int = READ_TRIES, pause_s: float = READ_PAUSE_S) -> T:
    """`call` (an idempotent read), tried again in place after a transient failure.

    A poll of a system without webhooks reads every changed record one by one; failing the
    whole pass on one 5xx among them throws away what it had seen and retries all of it.
    Under a steady error rate a long pass then never completes, changes are first seen
    much later, stamped with the record's latest change time (all a record-level clock
    gives), and an older field edit can outrank a newer one made elsewhere meanwhile.
    A wait longer than READ_MAX_PAUSE_S (a long Retry-After) is left to the caller's retry.
    """
    for attempt in range(1, tries + 1):
        try:
            return call()
        except RetryableError as err:
            if attempt == tries or (err.retry_after or 0.0) > READ_MAX_PAUSE_S:
                raise
            wait = err.retry_after if err.retry_after is not None else pause_s * 2 ** (attempt - 1)
            wait = min(wait, READ_MAX_PAUSE_S)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
