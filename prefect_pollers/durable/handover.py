"""Durable waits, the flow's side: hand the running jobs over to the poller service and suspend.

A durable batch submits every item (bounded by ``concurrency``, each ref recorded as
in any batch), waits in process for up to ``DurableWait.handover_after`` seconds, and
hands the jobs still running (expected to run long) to the poller service: it records
a :class:`~prefect_pollers.durable.records.Handover` (a ledger row) and suspends the
flow run with a key stable for the batch and **no timeout**. The flow-run process
exits; its infrastructure is released. When the poller has recorded every
outcome it resumes the run, which re-runs from the top: the submits find their
recorded refs (nothing is submitted again) and this wait returns the recorded
outcomes without a poll.

Why no suspend timeout: Prefect fails a suspended run whose timeout has passed, and
refuses to resume it, even when the poller has recorded every outcome (it was down
for longer, say). The deadlines are the poller's instead: each job's wait ends at its
policy's deadline, counted from its submission (a poller started late records the
timeout outcome at its first look), and the run is resumed with that outcome. A run
whose policy has no deadline waits as long as its jobs run; cancel it to give up
(its remote jobs are then cancelled, see :mod:`prefect_pollers.durable.poller`).

Two lines of a suspension are Prefect's own, not ours: its async flow engine logs
``Finished in state Suspended(...)`` at ERROR for every state but Completed
(``prefect/flow_engine.py``, 3.8 and 3.9), which
:func:`~prefect_pollers.durable.suspension.suspend_for_poller` lowers to INFO for
this suspension only, and ``asuspend_flow_run`` takes no state message. Our INFO
line just before says what the run waits for (:func:`waiting_for`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from logging import Logger, LoggerAdapter
from typing import Any

import anyio
from prefect.logging import get_run_logger
from prefect.runtime import deployment, flow_run

from prefect_pollers.batch.items import run_items, secrets_of
from prefect_pollers.batch.models import BatchItem, BatchOutcome
from prefect_pollers.batch.progress import BatchProgress
from prefect_pollers.batch.runner import submit_and_wait
from prefect_pollers.client import JobApiClient
from prefect_pollers.durable.records import (
    HandedOverJob,
    Handover,
    batch_id,
    durable_records,
    read_handover,
    read_outcomes,
    suspend_key,
    write_handover,
)
from prefect_pollers.durable.suspension import suspend_for_poller
from prefect_pollers.engine import Clock, JobRef, PollPolicy, current_clock, use_clock
from prefect_pollers.engine.wait import StatusHook
from prefect_pollers.events.outbox import reconcile_job_events
from prefect_pollers.events.reporting import best_effort
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.protocol import ResultT
from prefect_pollers.tasks.observed import observed_wait

NAMED_JOBS = 10
"""How many job ids the handover's log line names."""


def require_deployment_run() -> str:
    """The current flow run's id, if a deployment's run (only those can be resumed).

    Raises:
        ValueError: saying what to do, when it is not.
    """
    flow_run_id = flow_run.get_id()
    if flow_run_id is None or deployment.get_id() is None:
        raise ValueError(
            "durable waits suspend the flow run, and only a deployment's flow run can be "
            "resumed: run the flow from a deployment, or pass durable=None"
        )
    return flow_run_id


def require_saved_block(credentials: JobApiCredentials[Any]) -> tuple[str, str]:
    """The block's type slug and name (the poller service loads it by name).

    Raises:
        ValueError: saying what to do, when the block was not saved.
    """
    slug = type(credentials).get_block_type_slug()
    name = credentials._block_document_name
    if not name or getattr(credentials, "_is_anonymous", False):
        raise ValueError(
            f"durable waits need a saved {slug} block: the poller service loads it by name "
            f"(save it with .save('name') and pass {type(credentials).__name__}.load('name'))"
        )
    return slug, name


@dataclass(frozen=True)
class HandOver:
    """A brief wait's verdict: hand the job over (it did not end in time).

    Attributes:
        next_poll_at: When the wait would have polled next (None: it never polled).
    """

    next_poll_at: datetime | None


class _CutClock:
    """The wait's clock, except that a sleep ending past ``cut_at`` ends the wait.

    The wait only sleeps before a poll, so a sleep past the cut means its next poll
    comes after the hand-over time: the wait stops there (its cancel scope is
    cancelled), and that poll's time is kept for the poller.
    """

    def __init__(self, inner: Clock, cut_at: float, scope: anyio.CancelScope) -> None:
        self.inner, self.cut_at, self.scope = inner, cut_at, scope
        self.next_poll_at: float | None = None

    def time(self) -> float:
        """The wait's time."""
        return self.inner.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep, unless the sleep ends past the cut: then end the wait."""
        wake_at = self.inner.time() + max(0.0, seconds)
        if wake_at > self.cut_at:
            self.next_poll_at = wake_at
            self.scope.cancel()
            await anyio.sleep_forever()
        await self.inner.sleep(seconds)


async def wait_briefly(
    credentials: JobApiCredentials[ResultT],
    ref: JobRef,
    policy: PollPolicy | None,
    handover_after: float,
    *,
    logger: Logger | LoggerAdapter[Any],
    client: JobApiClient[ResultT] | None = None,
    on_status: StatusHook | None = None,
) -> ResultT | HandOver:
    """The job's result if it ends within ``handover_after`` s; else a :class:`HandOver`.

    The wait follows the job's own policy unchanged (no poll is added or moved):
    it stops before the first poll that would come after ``handover_after`` s, and
    that poll's time goes to the poller. A job that ends otherwise within the time
    (failed, its own deadline passed) raises its typed error, as any wait does.
    """
    if handover_after == 0 and ref.submitted_status is None:
        return HandOver(next_poll_at=None)
    inner = current_clock()
    with anyio.CancelScope() as scope:
        cut = _CutClock(inner, inner.time() + handover_after, scope)
        with use_clock(cut):
            return await observed_wait(
                credentials, ref, policy, logger=logger, client=client, on_status=on_status
            )
    at = cut.next_poll_at
    return HandOver(None if at is None else datetime.fromtimestamp(at, timezone.utc))


async def wait_handed_over(
    credentials: JobApiCredentials[ResultT],
    job: HandedOverJob,
    policy: PollPolicy | None,
    *,
    logger: Logger | LoggerAdapter[Any],
    flow_run_id: str | None = None,
    client: JobApiClient[ResultT] | None = None,
) -> ResultT:
    """Wait for a handed-over job at the pace the flow left it: no poll before its next one.

    Args:
        credentials: The provider's credentials block.
        job: The handed-over job.
        policy: The poll policy (the provider's preset if None).
        logger: Where its state changes are logged.
        flow_run_id: The flow run its events relate to, when waited for outside it.
        client: The client to poll with (the block's shared client if None).
    """
    if job.next_poll_at is not None:
        clock = current_clock()
        await clock.sleep(job.next_poll_at.timestamp() - clock.time())
    return await observed_wait(
        credentials, job.ref, policy, logger=logger, flow_run_id=flow_run_id, client=client
    )


async def run_batch_durably(
    credentials: JobApiCredentials[ResultT],
    items: Sequence[BatchItem],
    concurrency: int,
    policy: PollPolicy | None,
    title: str,
    handover_after: float,
) -> list[BatchOutcome[ResultT]]:
    """Run a validated batch, handing long jobs to the poller service; see the module.

    Raises:
        ValueError: not a deployment's flow run, or credentials not from a saved block.
        Pause: (Prefect's) the flow run is suspended; its process exits.
    """
    flow_run_id = require_deployment_run()
    slug, name = require_saved_block(credentials)
    logger = get_run_logger()
    batch = batch_id([item.key for item in items])
    records = durable_records()
    handover = await read_handover(records, flow_run_id, batch)
    if handover is not None:
        recorded = {**handover.finished, **await read_outcomes(records, flow_run_id, batch)}
        if all(item.key in recorded for item in items):
            if handover.progress_artifact_id is not None:
                progress = BatchProgress(title, len(items))
                progress.attach(handover.progress_artifact_id, len(items) - 1)
                await progress.finished_one()
            logger.info(
                "%s: the poller service recorded every handed-over job's outcome (%d jobs)",
                title,
                len(handover.jobs),
            )
            return [recorded[item.key] for item in items]
        return await _after_handover(credentials, items, handover, recorded, title)

    progress = BatchProgress(title, len(items))
    await progress.start()
    running: dict[str, HandedOverJob] = {}

    async def wait(item: BatchItem, ref: JobRef) -> ResultT | None:
        verdict = await wait_briefly(credentials, ref, policy, handover_after, logger=logger)
        if not isinstance(verdict, HandOver):
            return verdict
        running[item.key] = HandedOverJob(
            key=item.key, label=item.label, ref=ref, next_poll_at=verdict.next_poll_at
        )
        return None

    finished = await submit_and_wait(
        credentials, items, concurrency=concurrency, progress=progress, wait=wait
    )
    await progress.settle_events()  # before the process may exit on suspension
    if not running:
        return [finished[item.key] for item in items]
    handover = Handover(
        flow_run_id=flow_run_id,
        batch_id=batch,
        block_type_slug=slug,
        block_document_name=name,
        policy=policy,
        jobs=[running[item.key] for item in items if item.key in running],
        finished=dict(finished),
        title=title,
        progress_artifact_id=progress.artifact_id,
    )
    await write_handover(records, handover)
    return await _after_handover(credentials, items, handover, dict(finished), title)


def waiting_for(handover: Handover, provider: str, waiting: int) -> str:
    """What a suspended run waits for, as its log and state message say it."""
    return (
        f"{handover.title}: waiting for {waiting} {provider} jobs handed over to the "
        f"poller service (prefect-pollers poller)"
    )


async def _after_handover(
    credentials: JobApiCredentials[ResultT],
    items: Sequence[BatchItem],
    handover: Handover,
    recorded: dict[str, BatchOutcome[Any]],
    title: str,
) -> list[BatchOutcome[ResultT]]:
    """Suspend until the poller resumes the run, or wait here for what is left.

    The suspension returns at once when the batch's key was spent already (the run
    was resumed early, by hand): then the wait happens in this process.
    """
    logger = get_run_logger()
    waiting = [job for job in handover.jobs if job.key not in recorded]
    ids = ", ".join(job.ref.job_id for job in waiting[:NAMED_JOBS])
    more = f" and {len(waiting) - NAMED_JOBS} more" if len(waiting) > NAMED_JOBS else ""
    logger.info(
        "%s (%s%s); suspending the flow run",
        waiting_for(handover, credentials.provider, len(waiting)),
        ids,
        more,
    )
    await suspend_for_poller(suspend_key(handover.batch_id))  # see the module
    logger.warning(
        "%s: resumed before the poller service recorded %d outcomes: waiting for them here",
        title,
        len(waiting),
    )
    jobs = {job.key: job for job in waiting}

    async def wait(item: BatchItem) -> ResultT:
        return await wait_handed_over(credentials, jobs[item.key], handover.policy, logger=logger)

    waited = await run_items(
        [item for item in items if item.key in jobs], wait, secrets=secrets_of(credentials)
    )
    recorded.update(waited)
    with best_effort("the job events"):
        await reconcile_job_events()
    return [recorded[item.key] for item in items]
