"""Shared limits: GCL slots leased in chunks hold across holders, come back, and are strict."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import weakref
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client

from prefect_pollers import ExonaCredentials
from prefect_pollers import client as client_module
from prefect_pollers.client import shared_client
from prefect_pollers.limits.shared import LeasedSlots, SharedLimitMissingError

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


async def test_leases_go_back_one_at_a_time_and_the_others_keep_every_slot_busy():
    name = f"test-{uuid.uuid4().hex[:8]}"
    busy = LeasedSlots(name, limit=6, chunk=2, reuse_seconds=0.2)
    other = LeasedSlots(name, limit=6, chunk=2)
    held = await asyncio.gather(*(busy.acquire() for _ in range(6)))
    oldest, *younger = sorted(set(held), key=lambda lease: lease.created)
    assert len(younger) == 2 and await active_slots(name) == 6
    await asyncio.sleep(0.3)  # every lease is past its reuse window
    waiting = asyncio.create_task(other.acquire())  # another process wants a slot
    for lease in (oldest, *younger):
        busy.release(lease)
    # The oldest lease retires; the younger two hand their freed slots out again.
    again = [await busy.acquire(), await busy.acquire()]
    assert {lease.lease_id for lease in again} <= {lease.lease_id for lease in younger}
    assert oldest.retiring and not any(lease.retiring for lease in younger)
    await asyncio.sleep(0.2)
    assert not waiting.done() and await active_slots(name) == 6
    busy.release(oldest)  # its last slot: it goes back, and the other process gets a turn
    other.release(await asyncio.wait_for(waiting, 10))
    assert busy.held == 4 and busy.taken == 4
    for lease in [*younger, *younger]:
        busy.release(lease)
    for slots in (busy, other):
        await slots.aclose()
    assert await active_slots(name) == 0


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


class FakePrefect:
    """The GCL calls of a Prefect client; renewals fail while ``down``."""

    def __init__(self) -> None:
        self.leased: list[uuid.UUID] = []
        self.down = False

    async def increment_concurrency_slots_with_lease(self, *, names, slots, **_):
        self.leased.append(uuid.uuid4())
        return httpx.Response(
            200, json={"lease_id": str(self.leased[-1]), "limits": [{"name": names[0]}]}
        )

    async def renew_concurrency_lease(self, lease_id, lease_duration):
        if self.down:
            raise httpx.ConnectError("the API is down")

    async def release_concurrency_slots_with_lease(self, lease_id):
        pass

    async def __aexit__(self, *exc_info):
        pass


def faked(slots: LeasedSlots) -> FakePrefect:
    fake = FakePrefect()
    slots._client = fake  # type: ignore[assignment]
    slots._ensured = True
    return fake


async def test_a_lease_not_renewed_for_its_duration_is_lost_and_a_fresh_one_is_leased():
    slots = LeasedSlots("test-lost", limit=4, chunk=2, lease_seconds=0.3)
    fake = faked(slots)
    first, second = await asyncio.gather(slots.acquire(), slots.acquire())
    assert first is second and len(fake.leased) == 1  # one lease of two slots
    slots.release(second)  # a free slot in a lease this process holds
    fake.down = True  # renewals fail: the server frees the lease after its duration
    await asyncio.sleep(0.4)
    assert slots.held == 0  # not counted as held any more
    third = await slots.acquire()  # not from the lost lease: a fresh one from the server
    assert third is not first and len(fake.leased) == 2
    slots.release(first)
    slots.release(third)
    fake.down = False
    await slots.aclose()


async def test_a_renewed_lease_keeps_handing_out_its_slots():
    slots = LeasedSlots("test-renewed", limit=4, chunk=2, lease_seconds=0.3)
    fake = faked(slots)
    first, second = await asyncio.gather(slots.acquire(), slots.acquire())
    slots.release(second)
    await asyncio.sleep(0.4)  # renewed every 0.1 s
    assert await slots.acquire() is first and len(fake.leased) == 1
    slots.release(first)
    slots.release(first)
    await slots.aclose()


class RecordingSlots:
    """Shared request slots that note how many are held."""

    hold_after = 0.0

    def __init__(self, local: asyncio.Semaphore) -> None:
        self.held = 0
        self.local = local
        self.local_taken_first: list[bool] = []

    async def acquire(self) -> None:
        self.local_taken_first.append(self.local.locked())
        self.held += 1

    def release(self, lease: None, delay: float = 0.0) -> None:
        self.held -= 1

    async def aclose(self) -> None:
        pass


async def test_no_shared_request_slot_is_held_through_a_local_rate_gate_wait():
    creds = ExonaCredentials(api_key="k", max_connections=1)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "scan_1", "status": "queued"})

    async with creds.get_client(transport=httpx.MockTransport(answer)) as client:
        shared = RecordingSlots(client._slots)
        client.shared = SimpleNamespace(requests=shared, aclose=shared.aclose)
        held_in_gate: list[int] = []
        gate_acquire = client.gate.acquire

        async def acquire(clock, *, until=None):
            held_in_gate.append(shared.held)
            await asyncio.sleep(0.01)  # a rate-limit window's hold
            return await gate_acquire(clock, until=until)

        client.gate.acquire = acquire  # type: ignore[method-assign]
        await asyncio.gather(*(client.request("GET", "scans/scan_1") for _ in range(3)))
    assert held_in_gate == [0, 0, 0]
    assert shared.local_taken_first == [True, True, True] and shared.held == 0


def test_shared_clients_of_closed_event_loops_are_let_go():
    async def use(key: str) -> weakref.ref[Any]:
        client = shared_client(ExonaCredentials(api_key=key))
        # What binds a client to its loop: a wait, e.g. for news of its rate gate.
        await client.gate._wait_for_news(timeout=0.001)
        return weakref.ref(client)

    refs = [asyncio.run(use(f"key-{i}")) for i in range(5)]
    asyncio.run(use("key-last"))  # a later loop drops what closed loops left
    gc.collect()
    assert [ref() for ref in refs] == [None] * 5
    # Only the last loop's clients are left (until the next call), not one per loop.
    assert sum(loop.is_closed() for loop in client_module._shared) == 1
