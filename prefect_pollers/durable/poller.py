"""The poller service: one process that waits for every handed-over job of every flow run.

Every ``scan_interval`` seconds it lists the suspended flow runs (from Prefect), takes
those of its shards and reads their handovers (ledger rows). Each job is waited for
with the same engine as in a flow (its own policy, Retry-After, the block's pooled
client, in-flight slots and rate gate), all multiplexed on one event loop, logging and
emitting the same job events, related to the flow run. Outcomes are added as rows as
they come (one transaction for all that arrived since the last write); when a run's
last job ends the run is resumed (event and automation, then the API after
``resume_grace`` if it is still suspended) and its handovers are closed.

**Shards.** A flow run belongs to shard ``shard_of(id, shards)``. By default pollers
lease shards in the ledger with a heartbeat (:mod:`prefect_pollers.ledger.leases`,
the Airflow triggerer model): start as many as you like on one ledger; they share the
shards, and a poller that dies loses its shards to the others within two heartbeats.
``shard=i`` (``--shard i/n``) is a static override: the poller takes shard ``i`` of
``n``, leases nothing, and nobody takes over when it stops.

Nothing lives only here: a poller killed and started again finds the suspended runs
and their handovers, skips the outcomes already recorded, and resumes runs whose
outcomes are all recorded (their resume event may have been lost). A run cancelled
while suspended has its remote jobs without an outcome cancelled (where the provider
has a cancel endpoint), says so in its own log, and is dropped, even when it was
cancelled while no poller watched it: the open handovers of runs no longer suspended
are looked up in Prefect at each scan. A run resumed by someone else is dropped too.
A run whose wait fails (e.g. its block was deleted) is tried again after a growing
pause, with one warning per failure, not a traceback per scan. Progress artifacts
and events are best effort: they never fail a scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import anyio
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.logging.loggers import flow_run_logger

from prefect_pollers.batch.items import run_items, secrets_of
from prefect_pollers.batch.models import BatchItem, BatchOutcome
from prefect_pollers.batch.progress import BatchProgress
from prefect_pollers.client import shared_client
from prefect_pollers.durable.handover import wait_handed_over
from prefect_pollers.durable.records import (
    DurableRecords,
    Handover,
    durable_records,
    read_handovers,
    read_outcomes,
    suspend_key,
    write_outcomes,
)
from prefect_pollers.durable.resume import announce_done, resume_directly
from prefect_pollers.engine import PollerError
from prefect_pollers.events.outbox import reconcile_job_events
from prefect_pollers.events.reporting import best_effort
from prefect_pollers.ledger.durable_rows import Closed, close_handovers, open_handover_runs
from prefect_pollers.ledger.leases import HEARTBEAT_S, SHARDS, ShardLeases, shard_of
from prefect_pollers.ledger.settings import is_machine_local
from prefect_pollers.providers.base import JobApiCredentials

LOGGER = logging.getLogger("prefect_pollers.poller")
SUSPENDED = "Suspended"
PAGE = 200
WRITE_RETRY_S = 1.0
"""The pause before outcomes whose write failed are written again."""
RESUMED_KEPT = 1_000
"""How many resumed flow runs :attr:`PollerService.resumed` remembers (the latest)."""
MAX_RETRY_PAUSE_S = 600.0
"""The longest pause before a run whose wait failed is tried again."""
ENDED = (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED)
SEVERAL_MACHINES = (
    "pollers on several machines need one ledger: set PREFECT_POLLERS_LEDGER_URL to a "
    "PostgreSQL URL (the same for every worker and poller)"
)

__all__ = ["PollerService", "shard_of"]


class _RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"flow run {self.extra['flow_run_id'] if self.extra else '?'}: {msg}", kwargs


@dataclass
class _Failure:
    """A run whose wait failed: how often in a row, and when to try it again."""

    count: int
    retry_at: float


@dataclass
class _Watch:
    """One suspended flow run being waited for."""

    flow_run_id: str
    handovers: list[Handover]
    task: asyncio.Task[None] | None = None
    credentials: dict[str, JobApiCredentials[Any]] = field(default_factory=dict)
    recorded: bool = False
    """Every outcome is recorded: what is left is resuming the run."""


class _OutcomeWriter:
    """Adds a batch's outcomes as rows as they arrive.

    Each write is one transaction of every outcome that arrived since the last one; an
    outcome leaves the queue only once its write committed (a failed write is tried
    again). Rows are never rewritten, so a write that lands late changes nothing.
    """

    def __init__(
        self,
        records: DurableRecords,
        flow_run_id: str,
        batch: str,
        logger: logging.LoggerAdapter[Any],
    ) -> None:
        self.records, self.flow_run_id, self.batch, self.logger = (
            records,
            flow_run_id,
            batch,
            logger,
        )
        self.unwritten: dict[str, BatchOutcome[Any]] = {}
        self._arrived = anyio.Event()
        self._closed = False

    def add(self, outcome: BatchOutcome[Any]) -> None:
        """Queue an outcome for the next write."""
        self.unwritten[outcome.key] = outcome
        self._arrived.set()

    def close(self) -> None:
        """No more outcomes: :meth:`run` returns once every queued one is written."""
        self._closed = True
        self._arrived.set()

    async def run(self) -> None:
        """Write what arrives until closed and written."""
        while True:
            await self._arrived.wait()
            self._arrived = anyio.Event()
            while self.unwritten:
                taken = dict(self.unwritten)
                try:
                    await write_outcomes(self.records, self.flow_run_id, self.batch, taken)
                except Exception as exc:  # the ledger may be away: what is queued stays
                    self.logger.warning(
                        "recording %d outcomes failed (%s: %s); trying again in %g s",
                        len(taken),
                        type(exc).__name__,
                        exc,
                        WRITE_RETRY_S,
                    )
                    await anyio.sleep(WRITE_RETRY_S)
                    continue
                for key in taken:
                    del self.unwritten[key]
            if self._closed:
                return


class PollerService:
    """Waits for the jobs of suspended flow runs and resumes the runs; see the module.

    Args:
        shard: A static shard (from 0) instead of leases; None: lease shards.
        shards: How many shards flow runs fall into (the same on every poller).
        heartbeat: Seconds between two lease heartbeats; a dead poller's shards move
            to the others within twice that.
        scan_interval: Seconds between two looks for suspended runs.
        resume_grace: Seconds to let the resume automation act before resuming a run
            through the API.
        ledger_url: The ledger (``PREFECT_POLLERS_LEDGER_URL`` by default).
    """

    def __init__(
        self,
        *,
        shard: int | None = None,
        shards: int = SHARDS,
        heartbeat: float = HEARTBEAT_S,
        scan_interval: float = 5.0,
        resume_grace: float = 10.0,
        ledger_url: str | None = None,
    ) -> None:
        """Configure the service; :meth:`run` starts it."""
        if shards < 1 or (shard is not None and not 0 <= shard < shards):
            raise ValueError(f"shard {shard}/{shards}: give 0 <= shard < shards")
        if heartbeat <= 0:
            raise ValueError(f"heartbeat {heartbeat}: give a positive number of seconds")
        self.shard, self.shards, self.heartbeat = shard, shards, heartbeat
        self.scan_interval = scan_interval
        self.resume_grace = resume_grace
        self.ledger_url = ledger_url
        self.leases: ShardLeases | None = None
        """This poller's leases (None with a static shard, or before :meth:`run`)."""
        self._records: DurableRecords | None = None
        self._held: frozenset[int] = frozenset()
        self._wake = asyncio.Event()
        self._watches: dict[str, _Watch] = {}
        self._failures: dict[str, _Failure] = {}
        self.resumed: deque[str] = deque(maxlen=RESUMED_KEPT)
        """The latest flow runs this poller resumed (and finished with), oldest first."""

    @property
    def records(self) -> DurableRecords:
        """Where handovers and outcomes are recorded (the ledger of this event loop)."""
        if self._records is None:
            self._records = durable_records(self.ledger_url)
        return self._records

    def owns(self, flow_run_id: str) -> bool:
        """Whether this poller holds ``flow_run_id``'s shard."""
        shard = shard_of(flow_run_id, self.shards)
        return shard == self.shard if self.shard is not None else shard in self._held

    @property
    def watching(self) -> set[str]:
        """The flow runs whose jobs are being waited for now."""
        return set(self._watches)

    async def run(self, stop: asyncio.Event) -> None:
        """Scan and wait until ``stop`` is set; then stop every wait (nothing is lost)."""
        ledger = self.records.ledger
        where = ledger.engine.url.render_as_string(hide_password=True)
        local = f" (machine-local; {SEVERAL_MACHINES})" if is_machine_local(ledger.url) else ""
        keeper: asyncio.Task[None] | None = None
        if self.shard is not None:
            LOGGER.info(
                "poller shard %d/%d started (static: no leases, no failover); ledger %s%s",
                self.shard,
                self.shards,
                where,
                local,
            )
        else:
            self.leases = ShardLeases(ledger, shards=self.shards, heartbeat=self.heartbeat)
            LOGGER.info(
                "poller %s started: leases on %d shards, heartbeat %g s (a stopped poller's "
                "shards move to the others within %g s); ledger %s%s",
                self.leases.holder,
                self.shards,
                self.heartbeat,
                self.leases.ttl,
                where,
                local,
            )
            await self._beat(self.leases)
            keeper = asyncio.create_task(self._keep_leases(self.leases, stop))
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.scan()
                except Exception as exc:  # the API may be down: the next scan tries again
                    LOGGER.warning(
                        "scan failed (%s: %s); trying again in %g s",
                        type(exc).__name__,
                        exc,
                        self.scan_interval,
                    )
                await self._pause(stop)
        finally:
            if keeper is not None:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
            await self.close()

    async def _pause(self, stop: asyncio.Event) -> None:
        """Until the next scan: ``scan_interval``, or less on a stop or a shard taken."""
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(
                waits, timeout=self.scan_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()

    async def _keep_leases(self, leases: ShardLeases, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), leases.next_beat_in())
            if not stop.is_set():
                await self._beat(leases)

    async def _beat(self, leases: ShardLeases) -> None:
        """Renew and claim leases; stop the waits of shards lost, scan at once for new ones."""
        before = self._held
        try:
            held = await leases.beat()
        except Exception as exc:  # the ledger may be away: leases not renewed are lost
            held = leases.lapse()
            LOGGER.warning(
                "lease heartbeat failed (%s: %s)%s",
                type(exc).__name__,
                exc,
                "; its shards are given up" if before and not held else "",
            )
        if held == before:
            return
        self._held = held
        LOGGER.info(
            "shards held: %s (took %s, gave up %s)",
            sorted(held) or "none",
            sorted(held - before) or "none",
            sorted(before - held) or "none",
        )
        lost = [run for run in self._watches if not self.owns(run)]
        for flow_run_id in lost:
            task = self._watches.pop(flow_run_id).task
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if held - before:
            self._wake.set()

    async def close(self) -> None:
        """Stop every wait in progress (their outcomes so far are recorded); free the leases."""
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watches.clear()
        if self.leases is not None:
            try:
                await self.leases.release()
            except Exception as exc:  # they expire by themselves
                LOGGER.warning("could not give the leases back (%s: %s)", type(exc).__name__, exc)
            self._held = frozenset()

    async def _suspended_runs(self) -> set[str]:
        found: set[str] = set()
        suspended = FlowRunFilter(
            state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[SUSPENDED]))
        )
        async with get_client() as client:
            offset = 0
            while True:
                page = await client.read_flow_runs(
                    flow_run_filter=suspended, limit=PAGE, offset=offset
                )
                found.update(str(run.id) for run in page)
                if len(page) < PAGE:
                    return found
                offset += PAGE

    async def _read_runs(self, flow_run_ids: set[str]) -> dict[str, FlowRun]:
        ids = sorted(flow_run_ids)
        found: dict[str, FlowRun] = {}
        async with get_client() as client:
            for start in range(0, len(ids), PAGE):
                chunk = [UUID(run) for run in ids[start : start + PAGE]]
                page = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=PAGE
                )
                found.update({str(run.id): run for run in page})
        return found

    async def scan(self) -> None:
        """Start waiting for newly suspended runs of this poller's shards; drop runs that left.

        Then settle the open handovers of this poller's runs that are not suspended:
        a run cancelled has its pending jobs cancelled, a run that ended is dropped.
        """
        suspended = {run for run in await self._suspended_runs() if self.owns(run)}
        for flow_run_id, watch in list(self._watches.items()):
            if watch.task is not None and watch.task.done():
                # finished (resumed) or failed: a run still suspended is looked at again
                self._watches.pop(flow_run_id)
        now = asyncio.get_running_loop().time()
        for flow_run_id in suspended - set(self._watches):
            failure = self._failures.get(flow_run_id)
            if failure is not None and now < failure.retry_at:
                continue  # its wait failed: tried again after its pause
            handovers = await read_handovers(self.records, flow_run_id)
            if not handovers:
                continue  # suspended by something else
            watch = _Watch(flow_run_id, handovers)
            self._watches[flow_run_id] = watch
            watch.task = asyncio.create_task(self._wait_and_resume(watch))
        for flow_run_id in set(self._watches) - suspended:
            if not self._watches[flow_run_id].recorded:  # else resumed: its task ends it
                await self._left_suspension(self._watches[flow_run_id])
        unsettled = await self._settle_unwatched(suspended)
        for flow_run_id in set(self._failures) - suspended - unsettled:
            del self._failures[flow_run_id]  # it left its suspension: nothing to retry

    async def _settle_unwatched(self, suspended: set[str]) -> set[str]:
        """Cancel the pending jobs of cancelled runs nobody watched; drop runs that ended.

        Returns:
            The runs of this poller with an open handover that are not suspended.
        """
        unwatched = {
            run
            for run in await open_handover_runs(self.records.ledger)
            if self.owns(run) and run not in suspended and run not in self._watches
        }
        if not unwatched:
            return unwatched
        runs = await self._read_runs(unwatched)
        now = asyncio.get_running_loop().time()
        for flow_run_id in unwatched:
            failure = self._failures.get(flow_run_id)
            if failure is not None and now < failure.retry_at:
                continue
            run = runs.get(flow_run_id)
            state = run.state_type if run is not None else None
            if state in (StateType.CANCELLING, StateType.CANCELLED):
                watch = _Watch(flow_run_id, await read_handovers(self.records, flow_run_id))
                try:
                    await self._cancel_jobs(watch)
                except Exception as exc:  # e.g. its block was deleted: tried again later
                    self._failed(flow_run_id, exc, _RunLogger(LOGGER, {"flow_run_id": flow_run_id}))
                    continue
                await close_handovers(self.records.ledger, flow_run_id, Closed.CANCELLED)
            elif run is None or state in ENDED:
                LOGGER.info(
                    "flow run %s %s before its handed-over jobs ended: dropped",
                    flow_run_id,
                    "no longer exists" if run is None else f"ended ({run.state_name})",
                )
                await close_handovers(self.records.ledger, flow_run_id, Closed.DROPPED)
        return unwatched

    async def _left_suspension(self, watch: _Watch) -> None:
        async with get_client() as client:
            flow_run = await client.read_flow_run(UUID(watch.flow_run_id))
        state = flow_run.state_type
        if state is StateType.PAUSED:
            return  # e.g. between two scans' reads
        if watch.task is not None:
            watch.task.cancel()
            await asyncio.gather(watch.task, return_exceptions=True)
        self._watches.pop(watch.flow_run_id, None)
        if state in (StateType.CANCELLING, StateType.CANCELLED):
            await self._cancel_jobs(watch)
            await close_handovers(self.records.ledger, watch.flow_run_id, Closed.CANCELLED)
        else:
            LOGGER.info(
                "flow run %s left its suspension (%s) before its jobs ended: dropped",
                watch.flow_run_id,
                state.value if state else "no state",
            )
            await close_handovers(self.records.ledger, watch.flow_run_id, Closed.DROPPED)

    async def _cancel_jobs(self, watch: _Watch) -> None:
        """Cancel a cancelled run's remote jobs; say in the run's own log what became of each."""
        run_log = flow_run_logger(flow_run_id=UUID(watch.flow_run_id))
        for handover in watch.handovers:
            recorded = await read_outcomes(self.records, watch.flow_run_id, handover.batch_id)
            credentials = await self._credentials(watch, handover)
            client = shared_client(credentials)
            cancelled: list[str] = []
            running: list[str] = []
            for job in handover.jobs:
                if job.key in recorded:
                    continue
                try:
                    (cancelled if await client.cancel(job.ref) else running).append(job.ref.job_id)
                except PollerError as exc:
                    run_log.warning(
                        "%s: could not cancel %s job %s (%s); it may keep running",
                        handover.title,
                        job.ref.provider,
                        job.ref.job_id,
                        exc,
                    )
            if cancelled:
                run_log.info(
                    "%s: the run was cancelled while suspended: %d %s jobs cancelled with "
                    "the provider: %s",
                    handover.title,
                    len(cancelled),
                    credentials.provider,
                    ", ".join(cancelled),
                )
            if running:
                run_log.warning(
                    "%s: the run was cancelled while suspended: %d %s jobs keep running "
                    "(%s documents no cancel endpoint): %s",
                    handover.title,
                    len(running),
                    credentials.provider,
                    credentials.provider,
                    ", ".join(running),
                )
            LOGGER.info(
                "flow run %s was cancelled: %d %s jobs cancelled, %d keep running "
                "(no cancel endpoint); named in the run's own log",
                watch.flow_run_id,
                len(cancelled),
                credentials.provider,
                len(running),
            )

    async def _credentials(self, watch: _Watch, handover: Handover) -> JobApiCredentials[Any]:
        name = handover.block_name
        if name not in watch.credentials:
            block = await Block.aload(name)
            if not isinstance(block, JobApiCredentials):
                raise TypeError(f"block {name!r} is not a prefect-pollers credentials block")
            watch.credentials[name] = block
        return watch.credentials[name]

    async def _wait_and_resume(self, watch: _Watch) -> None:
        logger = _RunLogger(LOGGER, {"flow_run_id": watch.flow_run_id})
        try:
            jobs = 0
            for handover in watch.handovers:
                jobs += await self._wait_for_batch(watch, handover, logger)
            watch.recorded = True
            self._failures.pop(watch.flow_run_id, None)
            with best_effort("the job events"):
                await reconcile_job_events()
            announce_done(watch.flow_run_id, jobs)
            logger.info("every outcome recorded: resume event emitted")
            await asyncio.sleep(self.resume_grace)
            keys = {suspend_key(handover.batch_id) for handover in watch.handovers}
            if await resume_directly(watch.flow_run_id, keys):
                logger.info("resumed through the API (its resume event did not act)")
            else:
                logger.info("resumed by its event's automation")
            await close_handovers(self.records.ledger, watch.flow_run_id, Closed.RESUMED)
            self.resumed.append(watch.flow_run_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one run's failure never stops the service
            self._failed(watch.flow_run_id, exc, logger)

    def _failed(
        self, flow_run_id: str, error: Exception, logger: logging.LoggerAdapter[Any]
    ) -> None:
        """Back off from a run whose wait failed (a deleted block fails every time)."""
        count = self._failures[flow_run_id].count + 1 if flow_run_id in self._failures else 1
        pause = min(self.scan_interval * 2.0**count, MAX_RETRY_PAUSE_S)
        self._failures[flow_run_id] = _Failure(count, asyncio.get_running_loop().time() + pause)
        logger.warning(
            "waiting for its jobs failed (%s: %s; %d in a row); trying again in %.3g s",
            type(error).__name__,
            error,
            count,
            pause,
        )

    async def _wait_for_batch(
        self, watch: _Watch, handover: Handover, logger: logging.LoggerAdapter[Any]
    ) -> int:
        """Wait for a batch's jobs not yet recorded; record outcomes as they come."""
        recorded = await read_outcomes(self.records, watch.flow_run_id, handover.batch_id)
        pending = [job for job in handover.jobs if job.key not in recorded]
        if not pending:
            return len(handover.jobs)
        credentials = await self._credentials(watch, handover)
        logger.info("waiting for %d %s jobs", len(pending), credentials.provider)
        progress = BatchProgress(handover.title, handover.total)
        if handover.progress_artifact_id is not None:
            progress.attach(handover.progress_artifact_id, len(handover.finished) + len(recorded))
        jobs = {job.key: job for job in pending}
        writer = _OutcomeWriter(self.records, watch.flow_run_id, handover.batch_id, logger)

        async def wait(item: BatchItem) -> Any:
            return await wait_handed_over(
                credentials,
                jobs[item.key],
                handover.policy,
                logger=logger,
                flow_run_id=watch.flow_run_id,
            )

        async with anyio.create_task_group() as group:
            group.start_soon(writer.run)
            await run_items(
                [BatchItem(label=job.label, key=job.key, request=None) for job in pending],
                wait,
                progress=progress if progress.artifact_id is not None else None,
                on_outcome=writer.add,
                secrets=secrets_of(credentials),
            )
            writer.close()  # the group ends when every outcome is written
        return len(handover.jobs)
