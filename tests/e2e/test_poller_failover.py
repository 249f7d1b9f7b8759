"""End to end: two real pollers (``prefect-pollers poller``) share the shards; one SIGKILLed.

Both share one SQLite ledger, with a 1 s heartbeat. Leases need no Prefect API (their
heartbeats run beside the scans, which fail and are tried again): the pollers are
given an API URL where nothing listens, so the test starts no server. Once they hold
4 of the 8 shards each, one is frozen and SIGKILLed with
its children (a lost node): measured is how long until every shard it held is held
by the other, read from the ledger. The bound is two heartbeats (plus the time of
one beat on a loaded machine).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_pollers.ledger import Ledger
from prefect_pollers.ledger.leases import read_leases
from prefect_pollers.ledger.settings import async_url
from tests.processes import Process, free_port, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HEARTBEAT = 1.0
SLACK_S = 1.0
"""A beat's own time on a loaded machine (two cores shared by several test runs)."""


@pytest.fixture
def two_pollers(tmp_path: Path) -> Iterator[tuple[list[Process], str]]:
    """Two poller processes on one ledger; stopped (by their pids) after the test."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = {
        **subprocess_env(tmp_path / "prefect-home", f"http://127.0.0.1:{free_port()}/api"),
        "PREFECT_POLLERS_LEDGER_URL": url,
    }
    args = [sys.executable, "-m", "prefect_pollers.cli", "poller", "--no-automation"]
    args += ["--heartbeat", str(HEARTBEAT), "--scan-interval", "1"]
    pollers = [Process(f"poller-{i}", args, env, tmp_path) for i in range(2)]
    try:
        yield pollers, async_url(url)
    finally:
        for poller in pollers:
            poller.stop(signal.SIGTERM, 10)


async def shards_by_pid(ledger: Ledger) -> dict[int, set[int]]:
    """Which poller process holds which shards (a holder id is ``host:pid:random``)."""
    held: dict[int, set[int]] = {}
    for lease in await read_leases(ledger):
        if lease.holder is not None:
            held.setdefault(int(lease.holder.split(":")[1]), set()).add(lease.shard)
    return held


async def until(ledger: Ledger, done, timeout: float, every: float = 0.05) -> dict[int, set[int]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await shards_by_pid(ledger)
        except Exception:  # the pollers have not created the tables yet
            found = {}
        if done(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(every)


async def test_a_killed_pollers_shards_move_to_the_other_within_two_heartbeats(two_pollers):
    pollers, url = two_pollers
    victim, survivor = (p.popen.pid for p in pollers)
    ledger = Ledger(url)
    try:
        shared = await until(
            ledger,
            lambda h: set(h) == {victim, survivor} and sorted(map(len, h.values())) == [4, 4],
            timeout=180,
        )
        assert sorted(map(len, shared.values())) == [4, 4], (shared, pollers[0].tail())
        lost = shared[victim]
        killed_at = time.time()
        pollers[0].kill_tree()
        moved = await until(ledger, lambda h: lost <= h.get(survivor, set()), timeout=30)
        took = time.time() - killed_at
    finally:
        await ledger.aclose()
    assert moved == {survivor: set(range(8))}, (moved, pollers[1].tail())
    print(f"\nfailover: the killed poller's shards {sorted(lost)} moved after {took:.2f} s")
    assert took <= 2 * HEARTBEAT + SLACK_S, took
