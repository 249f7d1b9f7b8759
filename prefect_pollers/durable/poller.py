"""The poller service: one process that waits for every handed-over job of every flow run.

Every ``scan_interval`` seconds it lists the suspended flow runs (from Prefect), takes
those of its shard (a digest of the flow run id modulo ``shards``, so two pollers
never poll the same job) and reads their handovers (from result storage). Each job
is waited for with the same engine as in a flow (its own policy, Retry-After, the
block's pooled client, in-flight slots and rate gate), all multiplexed on one event
loop, logging and emitting the same job events, related to the flow run. Outcomes
are recorded as they come; when a run's last job ends the run is resumed (event and
automation, then the API after ``resume_grace`` if it is still suspended).

Nothing lives only here: a poller killed and started again finds the suspended runs
and their handovers, skips the outcomes already recorded, and resumes runs whose
outcomes are all recorded (their resume event may have been lost). A run that is
cancelled while suspended has its remote jobs cancelled (where the provider has a
cancel endpoint), says so in its own log, and is dropped; a run resumed by someone
else is dropped too. A run whose wait fails (e.g. its block was deleted) is tried
again after a growing pause, with one warning per failure, not a traceback per scan.
Progress artifacts and events are best effort: they never fail a scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.client.schemas.objects import StateType
from prefect.logging.loggers import flow_run_logger

from prefect_pollers.batch.items import run_items, secrets_of
from prefect_pollers.batch.models import BatchItem, BatchOutcome
from prefect_pollers.batch.progress import BatchProgress
from prefect_pollers.client import shared_client
from prefect_pollers.durable.handover import wait_handed_over
from prefect_pollers.durable.records import (
    Handover,
    durable_store,
    read_handovers,
    read_outcomes,
    suspend_key,
    write_outcomes,
)
from prefect_pollers.durable.resume import announce_done, resume_directly
from prefect_pollers.engine import PollerError
from prefect_pollers.event_outbox import reconcile_job_events
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.reporting import best_effort

LOGGER = logging.getLogger("prefect_pollers.poller")
SUSPENDED = "Suspended"
PAGE = 200
RECORD_EVERY_S = 1.0
"""How often a run's outcomes are written while its jobs end (at most)."""
RESUMED_KEPT = 1_000
"""How many resumed flow runs :attr:`PollerService.resumed` remembers (the latest)."""
MAX_RETRY_PAUSE_S = 600.0
"""The longest pause before a run whose wait failed is tried again."""


def shard_of(flow_run_id: str, shards: int) -> int:
    """The shard a flow run's jobs belong to."""
    return int(hashlib.sha256(flow_run_id.encode()).hexdigest()[:8], 16) % shards


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


class PollerService:
    """Waits for the jobs of suspended flow runs and resumes the runs; see the module.

    Args:
        shard: This poller's shard, from 0.
        shards: How many pollers share the work.
        scan_interval: Seconds between two looks for suspended runs.
        resume_grace: Seconds to let the resume automation act before resuming a run
            through the API.
    """

    def __init__(
        self,
        *,
        shard: int = 0,
        shards: int = 1,
        scan_interval: float = 5.0,
        resume_grace: float = 10.0,
    ) -> None:
        """Configure the service; :meth:`run` starts it."""
        if shards < 1 or not 0 <= shard < shards:
            raise ValueError(f"shard {shard}/{shards}: give 0 <= shard < shards")
        self.shard, self.shards = shard, shards
        self.scan_interval = scan_interval
        self.resume_grace = resume_grace
        self.store = durable_store()
        self._watches: dict[str, _Watch] = {}
        self._failures: dict[str, _Failure] = {}
        self.resumed: deque[str] = deque(maxlen=RESUMED_KEPT)
        """The latest flow runs this poller resumed (and finished with), oldest first."""

    def owns(self, flow_run_id: str) -> bool:
        """Whether this poller's shard holds ``flow_run_id``'s jobs."""
        return shard_of(flow_run_id, self.shards) == self.shard

    @property
    def watching(self) -> set[str]:
        """The flow runs whose jobs are being waited for now."""
        return set(self._watches)

    async def run(self, stop: asyncio.Event) -> None:
        """Scan and wait until ``stop`` is set; then stop every wait (nothing is lost)."""
        LOGGER.info("poller shard %d/%d started", self.shard, self.shards)
        try:
            while not stop.is_set():
                try:
                    await self.scan()
                except Exception as exc:  # the API may be down: the next scan tries again
                    LOGGER.warning(
                        "scan failed (%s: %s); trying again in %g s",
                        type(exc).__name__,
                        exc,
                        self.scan_interval,
                    )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.scan_interval)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop every wait in progress (their outcomes so far are recorded)."""
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watches.clear()

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

    async def scan(self) -> None:
        """Start waiting for newly suspended runs of this shard; drop runs that left."""
        suspended = {run for run in await self._suspended_runs() if self.owns(run)}
        for flow_run_id, watch in list(self._watches.items()):
            if watch.task is not None and watch.task.done():
                # finished (resumed) or failed: a run still suspended is looked at again
                self._watches.pop(flow_run_id)
        for flow_run_id in set(self._failures) - suspended:
            del self._failures[flow_run_id]  # it left its suspension: nothing to retry
        now = asyncio.get_running_loop().time()
        for flow_run_id in suspended - set(self._watches):
            failure = self._failures.get(flow_run_id)
            if failure is not None and now < failure.retry_at:
                continue  # its wait failed: tried again after its pause
            handovers = await read_handovers(self.store, flow_run_id)
            if not handovers:
                continue  # suspended by something else
            watch = _Watch(flow_run_id, handovers)
            self._watches[flow_run_id] = watch
            watch.task = asyncio.create_task(self._wait_and_resume(watch))
        for flow_run_id in set(self._watches) - suspended:
            if not self._watches[flow_run_id].recorded:  # else resumed: its task ends it
                await self._left_suspension(self._watches[flow_run_id])

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
        else:
            LOGGER.info(
                "flow run %s left its suspension (%s) before its jobs ended: dropped",
                watch.flow_run_id,
                state.value if state else "no state",
            )

    async def _cancel_jobs(self, watch: _Watch) -> None:
        """Cancel a cancelled run's remote jobs; say in the run's own log what became of each."""
        run_log = flow_run_logger(flow_run_id=UUID(watch.flow_run_id))
        for handover in watch.handovers:
            recorded = await read_outcomes(self.store, watch.flow_run_id, handover.batch_id)
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
        recorded = await read_outcomes(self.store, watch.flow_run_id, handover.batch_id)
        pending = [job for job in handover.jobs if job.key not in recorded]
        if not pending:
            return len(handover.jobs)
        credentials = await self._credentials(watch, handover)
        logger.info("waiting for %d %s jobs", len(pending), credentials.provider)
        changed = anyio.Event()
        progress = BatchProgress(handover.title, handover.total)
        if handover.progress_artifact_id is not None:
            progress.attach(handover.progress_artifact_id, len(handover.finished) + len(recorded))
        jobs = {job.key: job for job in pending}

        async def wait(item: BatchItem) -> Any:
            return await wait_handed_over(
                credentials,
                jobs[item.key],
                handover.policy,
                logger=logger,
                flow_run_id=watch.flow_run_id,
            )

        def record(outcome: BatchOutcome[Any]) -> None:
            recorded[outcome.key] = outcome
            changed.set()

        async def record_as_they_come() -> None:
            nonlocal changed
            while True:
                await changed.wait()
                changed = anyio.Event()
                await self._write(watch, handover, recorded)
                await anyio.sleep(RECORD_EVERY_S)

        async with anyio.create_task_group() as group:
            group.start_soon(record_as_they_come)
            await run_items(
                [BatchItem(label=job.label, key=job.key, request=None) for job in pending],
                wait,
                progress=progress if progress.artifact_id is not None else None,
                on_outcome=record,
                secrets=secrets_of(credentials),
            )
            group.cancel_scope.cancel()
        await self._write(watch, handover, recorded)
        return len(handover.jobs)

    async def _write(
        self, watch: _Watch, handover: Handover, recorded: dict[str, BatchOutcome[Any]]
    ) -> None:
        await write_outcomes(self.store, watch.flow_run_id, handover.batch_id, dict(recorded))
