"""Poller shard leases in the ledger (SQLite), with a tiny heartbeat: claim, renew, expiry, balance.

The lease functions are called directly, as two pollers on one ledger would call them;
no process is started (tests/e2e/test_poller_failover.py does that). Their time is a
virtual clock that only the test moves: a slow transaction on a loaded machine does not
age a lease.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_pollers.durable.poller import PollerService
from prefect_pollers.engine import VirtualClock
from prefect_pollers.ledger import Ledger
from prefect_pollers.ledger.leases import ShardLeases, read_leases, shard_of

HEARTBEAT = 0.2
CLOCK = VirtualClock()  # moved forward by hand (advance), never slept on


@pytest.fixture
async def ledger(tmp_path: Path):
    ledger = Ledger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    yield ledger
    await ledger.aclose()


def pollers(ledger: Ledger, count: int, shards: int = 8) -> list[ShardLeases]:
    other = Ledger(ledger.url)  # each poller its own engine, as in its own process
    return [
        ShardLeases(
            ledger if i == 0 else other,
            shards=shards,
            heartbeat=HEARTBEAT,
            holder=f"p{i}",
            clock=CLOCK,
        )
        for i in range(count)
    ]


async def test_a_lone_poller_claims_every_shard_and_keeps_them(ledger):
    [a] = pollers(ledger, 1)
    assert await a.beat() == frozenset(range(8))
    CLOCK.advance(3 * HEARTBEAT)
    assert await a.beat() == frozenset(range(8))  # renewed, though older than the TTL
    assert {lease.holder for lease in await read_leases(ledger)} == {"p0"}


async def test_two_pollers_balance_and_never_hold_one_shard_both(ledger):
    a, b = pollers(ledger, 2)
    assert len(await a.beat()) == 8
    assert await b.beat() == frozenset()  # all held and live: nothing to take
    assert len(await a.beat()) == 4  # two live pollers: a gives back above its share
    assert len(await b.beat()) == 4
    assert a.held.isdisjoint(b.held) and a.held | b.held == set(range(8))
    for _ in range(3):  # stable while both beat
        CLOCK.advance(HEARTBEAT / 2)
        await a.beat()
        await b.beat()
        assert a.held.isdisjoint(b.held) and len(a.held) == len(b.held) == 4


async def test_a_poller_that_stops_beating_loses_its_shards_after_two_heartbeats(ledger):
    a, b = pollers(ledger, 2)
    await a.beat()
    await b.beat()
    await a.beat()
    await b.beat()
    lost = set(a.held)
    assert a.renewed_at is not None
    stopped_at = a.renewed_at  # a's last heartbeat: it is dead from here
    CLOCK.advance(HEARTBEAT)
    assert len(await b.beat()) == 4  # not expired yet: a's leases stay a's
    while len(await b.beat()) < 8:  # b wakes when a's leases expire
        CLOCK.advance(b.next_beat_in())
    moved_after = CLOCK.time() - stopped_at
    assert 2 * HEARTBEAT <= moved_after <= 2 * HEARTBEAT + 0.25, moved_after
    holders = {lease.shard: lease.holder for lease in await read_leases(ledger)}
    assert all(holders[shard] == "p1" for shard in lost)
    # a, frozen meanwhile, comes back: its leases are gone (fail closed), it gets a share again
    assert a.lapse() == frozenset()
    await a.beat()
    await b.beat()
    assert len(await a.beat()) == 4 and a.held.isdisjoint(b.held)


async def test_a_clean_stop_hands_the_shards_over_at_once(ledger):
    a, b = pollers(ledger, 2)
    await a.beat()
    await b.beat()
    await a.beat()
    await a.release()
    assert await b.beat() == frozenset(range(8))


async def test_leases_not_renewed_within_two_heartbeats_are_given_up(ledger):
    [a] = pollers(ledger, 1)
    await a.beat()
    assert a.lapse() == frozenset(range(8))  # just renewed: kept
    CLOCK.advance(2 * HEARTBEAT)
    assert a.lapse() == frozenset()


async def test_a_poller_owns_the_runs_of_the_shards_it_holds(ledger):
    service = PollerService(shards=4, heartbeat=HEARTBEAT, ledger_url=ledger.url)
    runs = [f"run-{i}" for i in range(40)]
    assert not any(service.owns(run) for run in runs)  # no lease yet: nothing
    service.leases = ShardLeases(ledger, shards=4, heartbeat=HEARTBEAT, holder="p0", clock=CLOCK)
    await service._beat(service.leases)
    assert all(service.owns(run) for run in runs)
    other = ShardLeases(Ledger(ledger.url), shards=4, heartbeat=HEARTBEAT, holder="p1", clock=CLOCK)
    await other.beat()
    await service._beat(service.leases)  # gives two shards back
    await other.beat()
    mine = {run for run in runs if service.owns(run)}
    assert mine == {run for run in runs if shard_of(run, 4) not in other.held}
    assert 0 < len(mine) < len(runs)
