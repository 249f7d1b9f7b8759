"""Poller shard leases in the ledger, with heartbeats (the model of Airflow's triggerer).

Flow runs fall into ``shards`` virtual shards (:func:`shard_of`). Each poller beats
every ``heartbeat`` seconds (:meth:`ShardLeases.beat`, one transaction): it renews
the leases it holds, gives back those above its share (``ceil(shards / live
pollers)``, so that a poller that starts gets work), and claims shards that are
unheld or expired (no heartbeat for ``2 * heartbeat``). A poller that dies loses its
shards to the others within ``2 * heartbeat``: a poller schedules its next beat at
the moment the first lease it does not hold would expire. A lease that cannot be
renewed is lost (fail closed): a poller that could not beat for ``2 * heartbeat``
drops every shard (:meth:`ShardLeases.lapse`).
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prefect_pollers.engine.clock import Clock, current_clock
from prefect_pollers.ledger.schema import lease_holders, leases
from prefect_pollers.ledger.store import Ledger

SHARDS = 8
"""Virtual shards by default: the most pollers that share the work."""
HEARTBEAT_S = 10.0
"""Seconds between two heartbeats by default: a dead poller's shards move within 20 s."""


def shard_of(flow_run_id: str, shards: int) -> int:
    """The shard a flow run's jobs belong to: a stable digest of its id, modulo ``shards``."""
    return int(hashlib.sha256(flow_run_id.encode()).hexdigest()[:8], 16) % shards


def new_holder_id() -> str:
    """A poller's id: its host and process id (for people) and a random part (unique)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Lease:
    """A shard's lease as the ledger holds it (``holder`` None: free)."""

    shard: int
    holder: str | None
    heartbeat_at: float


async def read_leases(ledger: Ledger) -> list[Lease]:
    """Every shard's lease, by shard."""
    async with await ledger._begin() as connection:
        result = await connection.execute(sa.select(leases).order_by(leases.c.shard))
        return [Lease(row.shard, row.holder, row.heartbeat_at) for row in result]


class ShardLeases:
    """One poller's leases on the ledger's shards; see the module.

    Args:
        ledger: The ledger every poller shares.
        shards: How many shards (the same on every poller).
        heartbeat: Seconds between two beats; a lease expires after twice that.
        holder: This poller's id (a new one by default).
        clock: Where the time is read (the context's clock by default: the wall
            clock, or a test's virtual one).
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        shards: int = SHARDS,
        heartbeat: float = HEARTBEAT_S,
        holder: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if shards < 1 or heartbeat <= 0:
            raise ValueError(f"shards ({shards}) and heartbeat ({heartbeat}) must be positive")
        self.ledger = ledger
        self.shards = shards
        self.heartbeat = heartbeat
        self.holder = holder or new_holder_id()
        self.clock = clock
        self.held: frozenset[int] = frozenset()
        """The shards held after the last beat."""
        self.renewed_at: float | None = None
        """When the last beat succeeded (epoch seconds)."""
        self._next_expiry: float | None = None

    def _now(self) -> float:
        return (self.clock or current_clock()).time()

    @property
    def ttl(self) -> float:
        """Seconds without a heartbeat after which a lease (or a poller) is over."""
        return 2 * self.heartbeat

    async def beat(self) -> frozenset[int]:
        """Renew, balance and claim, in one transaction; the shards held now."""
        now = self._now()
        expired_before = now - self.ttl
        async with await self.ledger._begin() as connection:
            await self._register(connection, now)
            live = int(
                await connection.scalar(
                    sa.select(sa.func.count())
                    .select_from(lease_holders)
                    .where(lease_holders.c.heartbeat_at >= expired_before)
                )
                or 1
            )
            share = math.ceil(self.shards / max(live, 1))
            await connection.execute(
                sa.update(leases)
                .where(leases.c.holder == self.holder, leases.c.shard < self.shards)
                .values(heartbeat_at=now)
            )
            rows = list(await connection.execute(sa.select(leases)))
            mine = sorted(
                r.shard for r in rows if r.holder == self.holder and r.shard < self.shards
            )
            if len(mine) > share:
                await self._give_back(connection, mine[share:])
            elif len(mine) < share:
                free = [
                    r.shard
                    for r in sorted(rows, key=lambda r: r.shard)
                    if r.shard < self.shards
                    and r.holder != self.holder
                    and (r.holder is None or r.heartbeat_at < expired_before)
                ]
                await self._claim(connection, free[: share - len(mine)], expired_before, now)
            rows = list(await connection.execute(sa.select(leases)))
        self.held = frozenset(r.shard for r in rows if r.holder == self.holder)
        others = [
            r.heartbeat_at
            for r in rows
            if r.holder not in (None, self.holder) and r.heartbeat_at >= expired_before
        ]
        self._next_expiry = min(others) + self.ttl if others else None
        self.renewed_at = now
        return self.held

    def next_beat_in(self) -> float:
        """Seconds until the next beat: a heartbeat, or less when another lease expires first."""
        wait = self.heartbeat
        if self._next_expiry is not None:
            wait = min(wait, self._next_expiry - self._now() + 0.05)
        return max(wait, 0.05)

    def lapse(self) -> frozenset[int]:
        """Drop every shard if the last good beat is older than the TTL (fail closed); held."""
        if self.renewed_at is None or self._now() - self.renewed_at >= self.ttl:
            self.held = frozenset()
        return self.held

    async def release(self) -> None:
        """Give every lease back and leave (a clean stop: the others take over at once)."""
        async with await self.ledger._begin() as connection:
            await connection.execute(
                sa.update(leases).where(leases.c.holder == self.holder).values(holder=None)
            )
            await connection.execute(
                sa.delete(lease_holders).where(lease_holders.c.holder == self.holder)
            )
        self.held = frozenset()

    async def _register(self, connection: AsyncConnection, now: float) -> None:
        # Dead pollers leave; every shard has a row (free until claimed).
        await connection.execute(
            sa.delete(lease_holders).where(lease_holders.c.heartbeat_at < now - 10 * self.ttl)
        )
        updated = await connection.execute(
            sa.update(lease_holders)
            .where(lease_holders.c.holder == self.holder)
            .values(heartbeat_at=now)
        )
        if not updated.rowcount:
            await connection.execute(
                sa.insert(lease_holders).values(
                    holder=self.holder, started_at=now, heartbeat_at=now
                )
            )
        known = set(await connection.scalars(sa.select(leases.c.shard)))
        missing = [s for s in range(self.shards) if s not in known]
        if missing:
            await connection.execute(
                self.ledger._insert_ignore(leases),
                [{"shard": s, "heartbeat_at": 0.0} for s in missing],
            )

    async def _claim(
        self, connection: AsyncConnection, wanted: list[int], expired_before: float, now: float
    ) -> None:
        if not wanted:
            return
        # The condition is checked again under the row's lock: of two pollers, one wins.
        await connection.execute(
            sa.update(leases)
            .where(
                leases.c.shard.in_(wanted),
                sa.or_(leases.c.holder.is_(None), leases.c.heartbeat_at < expired_before),
            )
            .values(holder=self.holder, heartbeat_at=now, acquired_at=now)
        )

    async def _give_back(self, connection: AsyncConnection, shards: list[int]) -> None:
        await connection.execute(
            sa.update(leases)
            .where(leases.c.shard.in_(shards), leases.c.holder == self.holder)
            .values(holder=None)
        )
