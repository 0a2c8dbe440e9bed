"""Logging: one JSON object per line (or plain text), with every known secret redacted.

Redaction works on the final message, so a secret that slips into an exception text or
a URL is caught as well as one logged on purpose.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

REDACTED = "[redacted]"
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(basic|bearer)\s+[^\s'\",}]+")


# The id that follows one change from its webhook through ingest to every push it causes.
CORRELATION: ContextVar[str | None] = ContextVar("posbridge_correlation_id", default=None)


@contextmanager
def correlated(correlation_id: str | None) -> Iterator[None]:
    token = CORRELATION.set(correlation_id)
    try:
        yield
    finally:
        CORRELATION.reset(token)


def bind_correlation(correlation_id: str | None) -> None:
    """Name the current change from here on, inside an enclosing `correlated` scope.

    The engine binds the id when it reads its row anyway: a task that looked it up first
    would pay a transaction per task for a log field.
    """
    CORRELATION.set(correlation_id)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = CORRELATION.get()
        return True


def _install_record_factory() -> None:
    """Every record, whatever handler sees it, carries the current correlation id."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_posbridge", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.correlation_id = CORRELATION.get()
        return record

    factory._posbridge = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_record_factory()


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)} {REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = self.redact(message)
        record.args = None
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("correlation_id", "system", "delivery_id", "inbox_id", "customer_id", "task"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        return json.dumps(out, default=str)


def configure(level: str = "INFO", *, json_lines: bool = True, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JSONFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def all_secrets(rt: object) -> list[str]:
    """Every secret value in the runtime's settings and its enabled systems' settings."""
    from pydantic import SecretStr
    from sqlalchemy.engine import make_url

    from bridge.runtime import Runtime

    assert isinstance(rt, Runtime)
    secrets = list(rt.settings.secrets())
    for url in (rt.settings.db_url, rt.settings.broker):
        try:
            password = make_url(url.removeprefix("sqla+")).password
        except Exception:
            password = None
        if password:
            secrets.append(str(password))
    for system in rt.systems:
        try:
            conf = rt.adapter_settings(system)
        except Exception:  # noqa: S112 - incomplete settings hold no secret; validate() reports them
            continue
        for name in type(conf).model_fields:
            value = getattr(conf, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                secrets.append(value.get_secret_value())
    return secrets
