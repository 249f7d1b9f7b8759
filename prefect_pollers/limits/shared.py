"""Limits shared by every process on one provider account, in Prefect's global concurrency limits.

A credentials block's in-flight slots and rate gate hold within one process. A
block's :class:`SharedLimits` adds two limits that hold across processes and
machines (shards of a batch, deployments on one key), as Prefect global
concurrency limits (GCLs), created idempotently on first use:

- ``jobs_in_flight``: a slot is held from before a job's submit until its wait ends.
- ``requests`` per ``per_seconds``: a slot is held by each request until
  ``per_seconds`` after its response, so no span of ``per_seconds`` sees more
  than ``requests`` requests arrive at the provider, whatever its windows are:
  several processes sharing a ModelRoute key together stay under its limit.

A GCL round trip per request would cost a Prefect API call per request. Slots
are leased in chunks instead (:class:`LeasedSlots`): one
``increment-with-lease`` call takes ``chunk`` slots, which this process hands
out and takes back locally; a chunk goes back to the server once none of its
slots is taken. So that other processes get their turn, the chunks of a process go
back one at a time: once ``reuse_seconds`` have passed since it was leased, the
oldest chunk is retired (it hands out no more slots, and goes back once its last
one is freed), and the next only once it is back. A retired chunk holds slots idle
while its last jobs end: retiring every chunk as it passed ``reuse_seconds`` kept
about a quarter of a full cap idle (the ``scale_out`` benchmark). Leases are
renewed while held and expire on the server if this process dies. A lease that
could not be renewed for its duration (the Prefect API was down) is lost: the
server may have freed its slots, so they are handed out no more, and the next slot
comes from a fresh lease.
Acquiring is strict: a limit missing on the server is an error
(:class:`SharedLimitMissingError`), never a silent pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectAlreadyExists
from pydantic import BaseModel, Field

from prefect_pollers.engine import PollerError

LEASE_SECONDS = 120.0
"""How long a chunk's lease lasts unless renewed (Prefect's minimum is 60 s)."""
REUSE_SECONDS = 30.0
"""How long a chunk's slots are handed out again locally before it may be retired."""
MAX_RETRY_WAIT_S = 0.5
"""The longest pause before asking again for slots the server refused (423)."""

_log = logging.getLogger("prefect_pollers.limits.shared")


class SharedLimits(BaseModel):
    """Limits shared by every process that uses one provider account.

    Attributes:
        jobs_in_flight: Jobs submitted and not yet ended, across processes.
        requests: Requests sent per ``per_seconds``, across processes.
        per_seconds: The span of the request limit.
        name: The stem of the GCLs' names (``<name>-jobs-in-flight``,
            ``<name>-requests``); ``prefect-pollers-<provider>`` by default.
        chunk: Slots leased at once (by default a twentieth of the jobs limit,
            at most 100, and a tenth of the request limit).
    """

    jobs_in_flight: int | None = Field(default=None, ge=1, description="Jobs in flight at most.")
    requests: int | None = Field(default=None, ge=1, description="Requests per per_seconds.")
    per_seconds: float = Field(default=1.0, gt=0, description="The span of the request limit.")
    name: str | None = Field(default=None, description="The stem of the limits' names.")
    chunk: int | None = Field(default=None, ge=1, description="Slots leased at once.")

    def stem(self, provider: str) -> str:
        """The stem of this block's GCL names."""
        return self.name or f"prefect-pollers-{provider}"


class SharedLimitMissingError(PollerError):
    """A shared limit is not on the Prefect server (deleted while in use)."""


@dataclass(eq=False)
class Lease:
    """A chunk of slots leased from the server.

    Attributes:
        expires: When the server may free it (monotonic seconds): its duration
            after the last lease or renewal call that succeeded was sent.
        retiring: It hands out no slot again: it goes back once none is taken.
    """

    lease_id: UUID
    size: int
    expires: float
    created: float = field(default_factory=time.monotonic)
    taken: int = 0
    granted: int = 0
    lost: bool = False
    retiring: bool = False

    def live(self, now: float) -> bool:
        """Whether the server surely still holds this lease's slots for this process."""
        return not self.lost and now < self.expires

    def can_grant(self, now: float) -> bool:
        """Whether one more slot can be handed out from this lease."""
        if not self.live(now) or self.taken >= self.size:
            return False
        return self.granted < self.size or not self.retiring


class LeasedSlots:
    """One GCL's slots, leased in chunks and handed out locally.

    Args:
        name: The GCL's name.
        limit: Its limit (the GCL is created with it, or updated to it).
        chunk: Slots leased at once.
        hold_after: Seconds a slot stays taken after its holder gives it back (a
            request's span), used by the caller of :meth:`release`.
        lease_seconds: A lease's duration; it is renewed every third of it.
        reuse_seconds: How long a lease's freed slots are handed out again before
            it may be retired (one lease at a time, the oldest first).
    """

    def __init__(
        self,
        name: str,
        limit: int,
        chunk: int,
        *,
        hold_after: float = 0.0,
        lease_seconds: float = LEASE_SECONDS,
        reuse_seconds: float = REUSE_SECONDS,
    ) -> None:
        self.name = name
        self.limit = limit
        self.chunk = max(1, min(chunk, limit))
        self.hold_after = hold_after
        self.lease_seconds = lease_seconds
        self.reuse_seconds = reuse_seconds
        self.leases_acquired = 0
        self.refusals = 0
        self._leases: list[Lease] = []
        self._waiters: deque[asyncio.Future[Lease]] = deque()
        self._want = self.chunk
        self._client: PrefectClient | None = None
        self._ensured = False
        self._filler: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._held_until = 0.0

    @property
    def held(self) -> int:
        """Slots this process holds from the server (taken or not)."""
        now = time.monotonic()
        return sum(lease.size for lease in self._leases if lease.live(now))

    @property
    def taken(self) -> int:
        """Slots handed out locally and not yet given back."""
        return sum(lease.taken for lease in self._leases)

    async def acquire(self) -> Lease:
        """Wait for a slot; returns the lease it belongs to (give it to :meth:`release`).

        Raises:
            SharedLimitMissingError: the GCL is not on the server.
        """
        lease = self._grantable()
        if lease is not None:
            return self._grant(lease)
        waiter: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._filler is None or self._filler.done():
            self._filler = asyncio.create_task(self._fill())
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``."""
        lease = await self.acquire()
        try:
            yield
        finally:
            self.release(lease)

    def release(self, lease: Lease, delay: float = 0.0) -> None:
        """Give back a slot of ``lease``, now or after ``delay`` seconds."""
        if delay > 0:
            self._held_until = max(self._held_until, time.monotonic() + delay)
            asyncio.get_running_loop().call_later(delay, self._free, lease)
        else:
            self._free(lease)

    async def aclose(self) -> None:
        """Give every lease back to the server once its slots' holds are over; stop renewing."""
        # A slot released with a delay still counts for the request it was taken for.
        await asyncio.sleep(max(0.0, self._held_until - time.monotonic()))
        for task in (self._filler, self._renewer):
            if task is not None:
                task.cancel()
        leases, self._leases = self._leases, []
        for lease in leases:
            await self._give_back(lease)
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None

    # -- local bookkeeping ------------------------------------------------------------
    def _grantable(self) -> Lease | None:
        now = time.monotonic()
        self._retire(now)
        candidates = [lease for lease in self._leases if lease.can_grant(now)]
        # The fullest lease first, so that the others empty and go back sooner.
        return max(candidates, key=lambda lease: lease.taken, default=None)

    def _retire(self, now: float) -> None:
        """Retire the oldest lease past ``reuse_seconds``, unless one is retiring already."""
        if any(lease.retiring for lease in self._leases):
            return
        due = [lease for lease in self._leases if now - lease.created >= self.reuse_seconds]
        if due:
            min(due, key=lambda lease: lease.created).retiring = True

    @staticmethod
    def _grant(lease: Lease) -> Lease:
        lease.taken += 1
        lease.granted += 1
        return lease

    def _free(self, lease: Lease) -> None:
        lease.taken -= 1
        self._retire(time.monotonic())
        while self._waiters and lease.can_grant(time.monotonic()):
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._grant(lease))
        if lease.taken == 0 and lease in self._leases:
            self._leases.remove(lease)
            self._spawn(self._give_back(lease))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the server -------------------------------------------------------------------
    async def _prefect(self) -> PrefectClient:
        if self._client is None:
            client = get_client()
            await client.__aenter__()
            self._client = client
        if not self._ensured:
            try:
                await self._client.upsert_global_concurrency_limit_by_name(self.name, self.limit)
            except ObjectAlreadyExists:  # another process created it meanwhile: update it
                await self._client.upsert_global_concurrency_limit_by_name(self.name, self.limit)
            self._ensured = True
        return self._client

    async def _fill(self) -> None:
        """Lease chunks until every waiter has a slot; an unexpected error fails them all."""
        try:
            await self._fill_waiters()
        except Exception as exc:
            self._fail_waiters(exc)
            raise

    async def _fill_waiters(self) -> None:
        failures = 0
        while self._waiters:
            wanted = max(1, min(self._want, len(self._waiters)))
            try:
                lease = await self._lease(wanted)
            except (httpx.HTTPError, OSError) as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                _log.warning(
                    "could not lease %s slots (%s); again in %.1f s", self.name, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            if lease is None:  # refused: fewer next time, after a pause
                self.refusals += 1
                self._want = max(1, wanted // 2)
                continue
            self._want = min(self.chunk, wanted * 2)
            self._leases.append(lease)
            while self._waiters and lease.can_grant(time.monotonic()):
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(self._grant(lease))
            if lease.taken == 0:  # every waiter went away meanwhile
                self._leases.remove(lease)
                await self._give_back(lease)
            if self._renewer is None or self._renewer.done():
                self._renewer = asyncio.create_task(self._renew())

    async def _lease(self, slots: int) -> Lease | None:
        """Lease ``slots`` slots; None (after a pause) when the server has too few free."""
        client = await self._prefect()
        sent = time.monotonic()
        try:
            response = await client.increment_concurrency_slots_with_lease(
                names=[self.name],
                slots=slots,
                mode="concurrency",
                lease_duration=self.lease_seconds,
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            retry_after = float(exc.response.headers.get("Retry-After") or MAX_RETRY_WAIT_S)
            await asyncio.sleep(min(retry_after, MAX_RETRY_WAIT_S) * random.uniform(0.8, 1.2))
            return None
        body = response.json()
        lease = Lease(
            lease_id=UUID(body["lease_id"]), size=slots, expires=sent + self.lease_seconds
        )
        self.leases_acquired += 1
        if not any(limit["name"] == self.name for limit in body.get("limits", [])):
            await self._give_back(lease)
            self._ensured = False
            raise SharedLimitMissingError(
                f"the shared limit {self.name!r} is not on the Prefect server (deleted?): "
                f"create it again with `prefect gcl create {self.name} --limit {self.limit}`, "
                "or restart the run to have it created"
            )
        return lease

    async def _renew(self) -> None:
        """Renew every held lease every third of its duration, while any is held.

        A lease not renewed for its duration is lost (fail closed): the server may
        have given its slots to another process, so none is handed out again.
        """
        while self._leases:
            await asyncio.sleep(self.lease_seconds / 3)
            client = await self._prefect()
            for lease in list(self._leases):
                sent = time.monotonic()
                if not lease.live(sent):
                    if not lease.lost:
                        lease.lost = True
                        _log.warning(
                            "a lease of %d %s slots could not be renewed for %.0f s: lost, "
                            "its slots are handed out no more",
                            lease.size,
                            self.name,
                            self.lease_seconds,
                        )
                    continue
                try:
                    await client.renew_concurrency_lease(lease.lease_id, self.lease_seconds)
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code not in (404, 410):
                        _log.warning("could not renew a lease of %s slots: %s", self.name, exc)
                        continue
                    lease.lost = True  # expired on the server: its slots are free there
                    _log.warning(
                        "a lease of %d %s slots expired on the server", lease.size, self.name
                    )
                except (httpx.HTTPError, OSError) as exc:
                    _log.warning("could not renew a lease of %s slots: %s", self.name, exc)
                else:
                    lease.expires = sent + self.lease_seconds

    async def _give_back(self, lease: Lease) -> None:
        if not lease.live(time.monotonic()):  # the server frees it (or has freed it)
            return
        try:
            client = await self._prefect()
            await client.release_concurrency_slots_with_lease(lease.lease_id)
        except (httpx.HTTPError, OSError) as exc:  # the lease expires on the server
            _log.warning("could not give back %d %s slots: %s", lease.size, self.name, exc)

    def _fail_waiters(self, exc: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)


class SharedLimiter:
    """A block's shared limits, as leased GCL slots: one per client and event loop.

    Args:
        limits: The block's shared limits.
        provider: The provider, naming the GCLs by default.
    """

    def __init__(self, limits: SharedLimits, provider: str) -> None:
        self.limits = limits
        stem = limits.stem(provider)
        self.jobs = (
            LeasedSlots(
                f"{stem}-jobs-in-flight",
                limits.jobs_in_flight,
                limits.chunk or max(1, min(100, limits.jobs_in_flight // 20)),
            )
            if limits.jobs_in_flight
            else None
        )
        self.requests = (
            LeasedSlots(
                f"{stem}-requests",
                limits.requests,
                limits.chunk or max(1, limits.requests // 10),
                hold_after=limits.per_seconds,
            )
            if limits.requests
            else None
        )

    @contextlib.asynccontextmanager
    async def job(self) -> AsyncIterator[None]:
        """Hold a jobs-in-flight slot (if limited) for the body of the ``async with``."""
        if self.jobs is None:
            yield
            return
        async with self.jobs.slot():
            yield

    async def aclose(self) -> None:
        """Give every lease back."""
        for slots in (self.jobs, self.requests):
            if slots is not None:
                await slots.aclose()
