"""The per-process context: settings, database, adapters and the task dispatcher.

Web, worker and CLI processes each build one `Runtime`. Tests build their own, which is
how they put a sandbox behind an adapter (`transports=`) without touching the code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

import httpx

from bridge.adapters import registry
from bridge.adapters.base import Adapter, AdapterSettings, Capability
from bridge.config import ConfigError, Settings, get_settings, load_adapter_settings
from bridge.store.db import Database


class Dispatcher(Protocol):
    """Where the engine sends work. Tasks take ids only; the database holds the rest."""

    def ingest(self, inbox_ids: list[int], countdown: float = 0.0) -> None: ...

    def push(self, target: str, delivery_id: int, countdown: float = 0.0) -> None: ...

    def poll(self, system: str) -> None: ...

    def waiting(self, queues: Iterable[str]) -> dict[str, int]: ...

    def mark(self, queue: str, sent_at: datetime) -> None: ...


class Runtime:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transports: dict[str, httpx.BaseTransport] | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.db = Database(self.settings.db_url)
        self.classes = registry.available(self.settings.extra_adapters)
        unknown = [name for name in self.settings.systems if name not in self.classes]
        if unknown:
            raise ConfigError(
                f"POSBRIDGE_SYSTEMS names unknown systems {unknown}; known: {sorted(self.classes)}"
            )
        self.transports = transports or {}
        self._dispatcher = dispatcher
        self._adapters: dict[str, Adapter] = {}
        self._adapter_settings: dict[str, AdapterSettings] = {}
        self._lock = threading.Lock()

    # -- systems ----------------------------------------------------------------------
    @property
    def systems(self) -> list[str]:
        return list(self.settings.systems)

    def adapter_settings(self, system: str) -> AdapterSettings:
        if system not in self._adapter_settings:
            self._adapter_settings[system] = load_adapter_settings(
                system, self.classes[system].settings_model
            )
        return self._adapter_settings[system]

    def validate(self) -> None:
        """Fail at start-up, naming the variable, when an enabled system lacks settings."""
        for system in self.systems:
            conf = self.adapter_settings(system)
            if conf.timeout_s >= self.settings.lease_s:
                # A push whose request can outlive its lease may be retried while the first
                # request is still on its way to the POS: a duplicate create.
                raise ConfigError(
                    f"POSBRIDGE_{system.upper()}_TIMEOUT_S ({conf.timeout_s}) must be below "
                    f"POSBRIDGE_LEASE_S ({self.settings.lease_s})"
                )

    def adapter(self, system: str) -> Adapter:
        if system not in self.settings.systems:
            raise KeyError(f"system {system!r} is not enabled")
        with self._lock:
            adapter = self._adapters.get(system)
            if adapter is None:
                cls = self.classes[system]
                adapter = cls(self.adapter_settings(system), transport=self.transports.get(system))
                adapter.state_dir = self.settings.var_dir / "state" / system
                self._adapters[system] = adapter
            return adapter

    def targets(self) -> list[str]:
        """Systems the bridge writes to."""
        return [
            s
            for s in self.systems
            if Capability.CREATE in self.classes[s].capabilities
            and Capability.READ_ONLY not in self.classes[s].capabilities
        ]

    def with_capability(self, capability: Capability) -> list[str]:
        return [s for s in self.systems if capability in self.classes[s].capabilities]

    # -- work -------------------------------------------------------------------------
    @property
    def dispatch(self) -> Dispatcher:
        if self._dispatcher is None:
            from workers.dispatch import CeleryDispatcher

            self._dispatcher = CeleryDispatcher()
        return self._dispatcher

    def close(self) -> None:
        for adapter in self._adapters.values():
            adapter.close()
        self._adapters.clear()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    with _runtime_lock:
        if _runtime is not None and _runtime is not runtime:
            _runtime.close()
        _runtime = runtime
