"""What the adapter declares about itself, and what it refuses to pretend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.adapters.base import Capability, WebhookRequest
from bridge.adapters.errors import PayloadError, PermanentError, SignatureError
from bridge.adapters.lsone import LSOneAdapter
from bridge.adapters.lsone.sandbox import LSOneSandbox
from bridge.adapters.lsone.settings import LSOneSettings
from bridge.adapters.registry import load_class

from .conftest import Rig


def test_capabilities_say_polled_read_only_orders() -> None:
    assert LSOneAdapter.name == "lsone"
    assert LSOneAdapter.capabilities == {Capability.POLLING, Capability.ORDERS, Capability.READ_ONLY}
    for missing in (Capability.CREATE, Capability.UPDATE, Capability.DELETE, Capability.WEBHOOKS):
        assert missing not in LSOneAdapter.capabilities
    assert LSOneAdapter.fields == frozenset()
    assert LSOneAdapter.handled_events == LSOneAdapter.ignored_events == frozenset()
    assert load_class("bridge.adapters.lsone:LSOneAdapter") is LSOneAdapter


def test_the_sandbox_class_resolves() -> None:
    assert LSOneAdapter.sandbox_class is not None
    module, _, name = LSOneAdapter.sandbox_class.partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is LSOneSandbox


def test_not_writable_and_refuses_writes(rig: Rig) -> None:
    assert not rig.adapter.writable
    assert rig.adapter.to_canonical({"gid": "a", "customerID": "00013"}) == {}
    with pytest.raises(PermanentError):
        rig.adapter.from_canonical({"email": "a@example.com"})
    with pytest.raises(NotImplementedError):
        rig.adapter.create({}, "key")


def test_customer_poll_yields_nothing_because_ls_one_exposes_no_customers(rig: Rig) -> None:
    rig.till({"customerID": "00013"})
    assert list(rig.adapter.poll(None)) == []
    assert list(rig.adapter.poll(datetime(2020, 1, 1, tzinfo=UTC))) == []
    assert rig.requests("GET /api/customer/orders") == 0


def test_webhooks_are_refused(rig: Rig) -> None:
    request = WebhookRequest(url="http://bridge/hooks/lsone", headers={}, body=b"{}", path_token="x")
    with pytest.raises(SignatureError):
        rig.adapter.verify_webhook(request)
    with pytest.raises(PayloadError):
        rig.adapter.parse_webhook(request)


def test_settings_need_credentials_and_keep_the_password_secret() -> None:
    with pytest.raises(ValueError, match="password"):
        LSOneSettings(base_url="http://x", username="u")  # type: ignore[call-arg]
    settings = LSOneSettings(base_url="http://x", username="u", password="hunter2")
    assert "hunter2" not in repr(settings)
    assert settings.customer_code_system == ""
    with pytest.raises(TypeError):
        LSOneAdapter(settings=object())  # type: ignore[arg-type]
