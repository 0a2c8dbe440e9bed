"""Login, JWT lifetime, refresh, re-authentication and permissions."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from bridge.adapters.errors import AuthError
from bridge.adapters.lsone.client import jwt_claims
from bridge.adapters.lsone.sandbox import LSOneUser

from .conftest import Rig


def test_login_returns_a_signed_hs256_jwt_valid_for_twenty_minutes(rig: Rig) -> None:
    response = rig.control.post("/api/authorize/authenticate", json={"userName": "u", "password": "p"})
    assert response.status_code == 200
    token = response.json()["token"]
    claims, why = rig.sandbox.verify_token(token)
    assert claims is not None, why
    assert claims["exp"] - claims["iat"] == pytest.approx(1200)
    assert claims["permissions"] == ["CustomerOrder:Read"]
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "Max-Age=86400" in cookie


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t[:-4] + "AAAA", "signature"),
        (lambda t: "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + t.split(".")[1] + ".", "algorithm"),
        (lambda t: "not-a-jwt", "malformed"),
    ],
)
def test_forged_or_unsigned_tokens_are_refused(rig: Rig, mutate: Callable[[str], str], reason: str) -> None:
    token = rig.sandbox.issue_token("u", ["CustomerOrder:Read"])
    response = rig.control.get("/api/customer/orders", headers={"Authorization": f"Bearer {mutate(token)}"})
    assert response.status_code == 401
    assert reason in response.json()["detail"]


def test_missing_login_fields_are_a_validation_error(rig: Rig) -> None:
    response = rig.control.post("/api/authorize/authenticate", json={"userName": "u"})
    assert response.status_code == 400
    assert "password" in response.json()["errors"]


def test_wrong_password_is_an_auth_error_on_probe(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(users={"bridge": LSOneUser("right")})
    adapter = rig.adapter_for(password="wrong")
    with pytest.raises(AuthError) as caught:
        adapter.probe()
    assert caught.value.status == 401
    assert "Invalid user name or password" in str(caught.value)
    rig.adapter_for(password="right").probe()


def test_a_user_without_customer_order_read_gets_auth_error(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(users={"bridge": LSOneUser("pw", permissions=frozenset())})
    rig.till({"customerID": "00013"})
    adapter = rig.adapter_for(password="pw")
    with pytest.raises(AuthError) as caught:
        list(adapter.poll_orders(None))
    assert "CustomerOrder:Read" in str(caught.value)
    with pytest.raises(AuthError):
        adapter.probe()
    with pytest.raises(AuthError):
        adapter.fetch_order("2cd5ace7-24cb-4023-8fb6-d4f799bb20cc")


def test_token_is_refreshed_before_it_expires_without_a_401(rig: Rig) -> None:
    rig.adapter.api.list_orders(page=1, page_size=1)
    # 19 min 10 s later by the adapter's clock: inside the last minute of the 20 min token.
    rig.adapter.api._clock = lambda: time.time() + 1150
    rig.adapter.api.list_orders(page=1, page_size=1)
    stats = rig.auth_stats()
    assert (stats["authenticated"], stats.get("refreshed")) == (1, 1)
    assert stats.get("rejected", 0) == 0


def test_a_token_far_from_expiry_is_reused(rig: Rig) -> None:
    for _ in range(3):
        rig.adapter.api.list_orders(page=1, page_size=1)
    rig.adapter.api._clock = lambda: time.time() + 1000
    rig.adapter.api.list_orders(page=1, page_size=1)
    stats = rig.auth_stats()
    assert (stats["authenticated"], stats.get("refreshed", 0)) == (1, 0)


def test_a_token_refused_early_is_renewed_once_with_the_refresh_cookie(rig: Rig) -> None:
    rig.till({"customerID": "00013"})
    assert len(list(rig.adapter.poll_orders(None))) == 1
    rig.control.post("/_sandbox/auth/revoke", json={"access": True})  # new signing key
    assert len(list(rig.adapter.poll_orders(None))) == 1
    stats = rig.auth_stats()
    assert (stats["authenticated"], stats["refreshed"], stats["rejected"]) == (1, 1, 1)


def test_a_lost_refresh_grant_falls_back_to_a_new_login(rig: Rig) -> None:
    rig.adapter.api.list_orders(page=1, page_size=1)
    rig.control.post("/_sandbox/auth/revoke", json={"access": True, "refresh": True})
    rig.adapter.api.list_orders(page=1, page_size=1)
    stats = rig.auth_stats()
    assert (stats["authenticated"], stats["refresh_failed"]) == (2, 1)


def test_refresh_tokens_are_single_use(rig: Rig) -> None:
    login = rig.control.post("/api/authorize/authenticate", json={"userName": "u", "password": "p"})
    cookie = login.headers["set-cookie"].split(";")[0]
    first = rig.control.post("/api/authorize/refresh", headers={"Cookie": cookie})
    assert first.status_code == 200
    assert jwt_claims(first.json()["token"])["sub"] == "u"
    again = rig.control.post("/api/authorize/refresh", headers={"Cookie": cookie})
    assert again.status_code == 401


def test_neither_password_nor_tokens_are_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rig.till({"customerID": "00013"})
    list(rig.adapter.poll_orders(None))
    rig.control.post("/_sandbox/auth/revoke", json={"access": True})
    list(rig.adapter.poll_orders(None))
    token = rig.adapter.api._token
    assert token is not None
    assert rig.adapter.api._refresh_token
    assert "s3cret-pass" not in caplog.text
    assert token.value not in caplog.text
    assert rig.adapter.api._refresh_token not in caplog.text
    assert "s3cret-pass" not in repr(rig.adapter.settings)
