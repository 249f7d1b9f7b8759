"""Shared limits: GCL slots leased in chunks hold across holders, come back, and are strict."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from prefect.client.orchestration import get_client

from prefect_pollers.shared_limits import LeasedSlots, SharedLimitMissingError

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def active_slots(name: str) -> int:
    async with get_client() as client:
        return (await client.read_global_concurrency_limit_by_name(name)).active_slots


async def test_two_holders_on_one_limit_never_exceed_it_and_lease_in_chunks():
    name = f"test-{uuid.uuid4().hex[:8]}"
    # Two "processes": each its own leaser of the same GCL.
    holders = [LeasedSlots(name, limit=10, chunk=4), LeasedSlots(name, limit=10, chunk=4)]
    taken = 0
    most = 0

    async def job(slots: LeasedSlots) -> None:
        nonlocal taken, most
        async with slots.slot():
            taken += 1
            most = max(most, taken)
            await asyncio.sleep(0.02)
            taken -= 1

    await asyncio.gather(*(job(holders[i % 2]) for i in range(120)))
    assert 8 <= most <= 10  # two chunks of 4 at least, never over the limit
    # 120 slots handed out with far fewer server round trips.
    assert sum(h.leases_acquired for h in holders) < 60
    for holder in holders:
        await holder.aclose()
    assert await active_slots(name) == 0


async def test_slots_go_back_to_the_server_when_no_longer_taken():
    name = f"test-{uuid.uuid4().hex[:8]}"
    slots = LeasedSlots(name, limit=5, chunk=5)
    lease = await slots.acquire()
    assert await active_slots(name) == 1  # one waiter: a lease of one, not the chunk
    slots.release(lease)
    for _ in range(50):
        await asyncio.sleep(0.02)
        if await active_slots(name) == 0:
            break
    assert await active_slots(name) == 0 and slots.held == 0
    await slots.aclose()


async def test_a_hold_after_release_keeps_every_span_under_the_limit():
    name = f"test-{uuid.uuid4().hex[:8]}"
    span = 0.3
    slots = LeasedSlots(name, limit=5, chunk=2, hold_after=span)
    sent: list[float] = []

    async def request() -> None:
        lease = await slots.acquire()
        sent.append(time.monotonic())
        slots.release(lease, delay=slots.hold_after)

    await asyncio.gather(*(request() for _ in range(15)))
    for start in sent:
        assert sum(start <= t < start + span for t in sent) <= 5
    assert sent[-1] - sent[0] >= 2 * span  # 15 at 5 per span: at least three spans
    await asyncio.sleep(span + 0.1)
    await slots.aclose()


async def test_a_limit_deleted_on_the_server_is_an_error_not_a_pass():
    name = f"test-{uuid.uuid4().hex[:8]}"
    slots = LeasedSlots(name, limit=3, chunk=1)
    slots.release(await slots.acquire())  # creates the limit
    await asyncio.sleep(0.1)
    async with get_client() as client:
        await client.delete_global_concurrency_limit_by_name(name)
    slots._ensured = True  # as a long-running holder: it created the limit long ago
    with pytest.raises(SharedLimitMissingError, match=name):
        await slots.acquire()
    await slots.aclose()
