"""The sandboxes' webhook sender: every hook delivered, never more than a few posts open."""

from __future__ import annotations

import asyncio

import httpx

from bridge.sandbox import kit


def test_a_bulk_write_s_hooks_go_out_through_a_bounded_pool() -> None:
    open_now = 0
    most_open = 0
    received: list[bytes] = []

    async def receiver(request: httpx.Request) -> httpx.Response:
        nonlocal open_now, most_open
        open_now += 1
        most_open = max(most_open, open_now)
        await asyncio.sleep(0.002)  # a receiver that takes a moment, so posts overlap
        received.append(request.content)
        open_now -= 1
        return httpx.Response(200)

    async def run() -> kit.WebhookSender:
        sender = kit.WebhookSender("http://bridge.test/hook", transport=httpx.MockTransport(receiver))
        for n in range(500):  # what a run of bulk creates emits at once
            sender.emit(str(n).encode(), {"content-type": "text/plain"})
        assert await sender.drain(timeout=30)
        return sender

    sender = asyncio.run(run())
    assert sorted(int(b) for b in received) == list(range(500))
    assert sender.stats["delivered"] == 500
    assert most_open == kit.MAX_IN_FLIGHT


def test_a_failing_receiver_does_not_hold_a_slot_while_the_sender_waits_to_retry() -> None:
    calls: dict[bytes, int] = {}

    async def receiver(request: httpx.Request) -> httpx.Response:
        calls[request.content] = calls.get(request.content, 0) + 1
        # Each hook fails once, then succeeds: every one waits out a back-off.
        return httpx.Response(503 if calls[request.content] == 1 else 200)

    async def run() -> float:
        sender = kit.WebhookSender(
            "http://bridge.test/hook", transport=httpx.MockTransport(receiver), schedule=(0.3,)
        )
        started = asyncio.get_running_loop().time()
        for n in range(4 * kit.MAX_IN_FLIGHT):
            sender.emit(str(n).encode(), {})
        assert await sender.drain(timeout=30)
        return asyncio.get_running_loop().time() - started

    took = asyncio.run(run())
    assert all(n == 2 for n in calls.values())
    assert len(calls) == 4 * kit.MAX_IN_FLIGHT
    # Holding a slot through the 0.3 s back-off would serialize four rounds of waits.
    assert took < 4 * 0.3
