"""poll_orders: paging, token expiry mid-poll, what counts as new or changed, failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bridge.adapters.errors import RateLimitedError, RetryableError
from bridge.adapters.lsone.mapping import STATUS_NAMES, format_datetime

from .conftest import Rig


def ago(**delta: float) -> str:
    return format_datetime(datetime.now(UTC) - timedelta(**delta))


def test_paging_reads_every_order_once_in_pages(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(settings={"page_size": 7})
    made = {rig.till({"reference": f"R{n}", "customerID": f"{n:05d}"})["gid"] for n in range(25)}
    seen = [order.external_id for order in rig.adapter.poll_orders(None)]
    assert sorted(seen) == sorted(made)
    assert rig.requests("GET /api/customer/orders") == 4  # 7 + 7 + 7 + 4


def test_token_expiring_mid_poll_costs_one_renewal_and_no_error(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(settings={"page_size": 5}, token_ttl_s=1.0)
    made = {rig.till({"reference": f"R{n}"})["gid"] for n in range(20)}
    rig.faults(latency_ms=300)  # auth + 4 pages take ~1.5 s: the 1 s token runs out on the way
    started = time.monotonic()
    seen = [order.external_id for order in rig.adapter.poll_orders(None)]
    assert time.monotonic() - started > 1.0
    assert sorted(seen) == sorted(made)
    stats = rig.auth_stats()
    assert stats["authenticated"] + stats.get("refreshed", 0) == 2  # the login plus one renewal


def test_orders_added_while_paging_do_not_repeat_an_order(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(settings={"page_size": 2})
    made = [rig.till({"reference": f"R{n}", "createdDate": ago(hours=10 - n)})["gid"] for n in range(6)]
    polling = rig.adapter.poll_orders(None)
    first = [next(polling).external_id, next(polling).external_id]
    # An order back-dated before everything shifts every later page by one.
    rig.till({"reference": "late", "createdDate": ago(days=1)})
    rest = [order.external_id for order in polling]
    seen = first + rest
    assert len(seen) == len(set(seen))
    assert set(made) <= set(seen)


def test_new_open_and_recently_settled_orders_are_reported_since(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(settings={"reread_window_s": 7 * 24 * 3600})
    new_open = rig.till({"reference": "new-open", "status": 4})
    new_closed = rig.till({"reference": "new-closed", "status": 8})
    old_ready = rig.till({"reference": "old-ready", "status": 128, "createdDate": ago(days=60)})
    settled_lately = rig.till({"reference": "settled", "status": 256, "createdDate": ago(days=2)})
    rig.till({"reference": "old-closed", "status": 8, "createdDate": ago(days=60)})
    rig.till({"reference": "old-deleted", "status": 512, "createdDate": ago(days=30)})
    since = datetime.now(UTC) - timedelta(hours=1)
    reported = {order.reference for order in rig.adapter.poll_orders(since)}
    expected = {o["reference"] for o in (new_open, new_closed, old_ready, settled_lately)}
    assert reported == expected
    assert len(list(rig.adapter.poll_orders(None))) == 6

    strict = rig.adapter_for(reread_window_s=0)
    assert {o.reference for o in strict.poll_orders(since)} == {"new-open", "new-closed", "old-ready"}


def test_a_status_change_of_an_open_order_is_seen_on_the_next_poll(rig: Rig) -> None:
    order = rig.till({"reference": "R1", "status": 4, "createdDate": ago(days=3)})
    since = datetime.now(UTC) - timedelta(minutes=5)
    assert [o.status for o in rig.adapter.poll_orders(since)] == ["open"]
    rig.till({"status": 8}, gid=order["gid"])
    changed = list(rig.adapter.poll_orders(since))
    assert [(o.external_id, o.status) for o in changed] == [(order["gid"], "closed")]
    # createdDate is the only time stamp an LS One order has.
    assert changed[0].updated_at is not None
    assert changed[0].updated_at < since


def test_statuses_are_names_not_numbers(rig: Rig) -> None:
    for code in STATUS_NAMES:
        rig.till({"reference": f"S{code}", "status": code})
    by_reference = {o.reference: o.status for o in rig.adapter.poll_orders(None)}
    assert by_reference == {f"S{code}": name for code, name in STATUS_NAMES.items()}
    assert set(by_reference.values()) == {
        "open", "closed", "cancelled", "new", "printed", "ready", "delivered", "deleted"
    }  # fmt: skip


def test_order_fields_reach_the_engine(rig: Rig) -> None:
    rig.till({"reference": "CO-1", "customerID": "00013", "createdDate": "2024-03-01T12:30:00.500"})
    rig.till({"reference": "CO-2", "customerID": ""})
    orders = {o.reference: o for o in rig.adapter.poll_orders(None)}
    assert orders["CO-1"].customer_ref == "00013"
    assert orders["CO-1"].updated_at == datetime(2024, 3, 1, 12, 30, 0, 500000, tzinfo=UTC)
    assert orders["CO-1"].native["orderXML"] == ""
    assert orders["CO-2"].customer_ref is None


def test_server_local_time_stamps_are_read_in_the_configured_zone(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(settings={"server_timezone": "Atlantic/Reykjavik"})
    rig.till({"reference": "x", "createdDate": "2024-07-01T08:00:00"})
    oslo = rig.adapter_for(server_timezone="Europe/Oslo")
    [order] = list(oslo.poll_orders(None))
    assert order.updated_at == datetime(2024, 7, 1, 6, 0, tzinfo=UTC)
    [same] = list(rig.adapter.poll_orders(None))
    assert same.updated_at == datetime(2024, 7, 1, 8, 0, tzinfo=UTC)


def test_no_orders_at_all_is_an_empty_poll_not_an_error(rig: Rig) -> None:
    assert list(rig.adapter.poll_orders(None)) == []
    assert rig.requests("GET /api/customer/orders") == 1


def test_listings_lag_behind_like_the_vendor_says_they_may(rig: Rig) -> None:
    rig.faults(consistency_lag_ms=300)
    order = rig.till({"reference": "fresh"})
    assert list(rig.adapter.poll_orders(None)) == []
    assert rig.adapter.fetch_order(order["gid"]) is not None  # reads by id are immediate
    time.sleep(0.35)
    assert [o.reference for o in rig.adapter.poll_orders(None)] == ["fresh"]


def test_a_pos_that_is_down_is_retryable(rig: Rig) -> None:
    rig.faults(down=True)
    with pytest.raises(RetryableError) as caught:
        list(rig.adapter.poll_orders(None))
    assert caught.value.status == 503
    assert caught.value.retry_after == 1.0


def test_server_errors_are_retryable(rig: Rig) -> None:
    rig.adapter.probe()
    rig.faults(error_rate=1.0)
    with pytest.raises(RetryableError) as caught:
        list(rig.adapter.poll_orders(None))
    assert caught.value.status == 500


def test_rate_limits_honour_retry_after(rig: Rig) -> None:
    rig.adapter.probe()
    rig.faults(rate_limit_requests=1, rate_limit_window_s=60)
    rig.adapter.fetch_order("2cd5ace7-24cb-4023-8fb6-d4f799bb20cc")
    with pytest.raises(RateLimitedError) as caught:
        list(rig.adapter.poll_orders(None))
    assert caught.value.retry_after == 1.0


def test_a_lost_connection_is_retryable(rig: Rig) -> None:
    rig.faults(lose_response_after_commit_rate=1.0)  # the login POST loses its answer
    with pytest.raises(RetryableError):
        rig.adapter.probe()
