"""Durable waits, the flow's side: hand the running jobs over to the poller service and suspend.

A durable batch submits every item (bounded by ``concurrency``, each ref recorded as
in any batch), waits in process for up to ``DurableWait.handover_after`` seconds, and
hands the jobs still running (expected to run long) to the poller service: it records
a :class:`~prefect_pollers.durable.records.Handover` and suspends the flow run with
a key stable for the batch and a timeout from the policy's deadline. The flow-run
process exits; its infrastructure is released. When the poller has recorded every
outcome it resumes the run, which re-runs from the top: the submits find their
recorded refs (nothing is submitted again) and this wait returns the recorded
outcomes without a poll.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from prefect.flow_runs import asuspend_flow_run
from prefect.logging import get_run_logger
from prefect.results import get_result_store
from prefect.runtime import deployment, flow_run
from pydantic import BaseModel, Field

from prefect_pollers.batch.models import BatchItem, BatchOutcome
from prefect_pollers.batch.progress import BatchProgress
from prefect_pollers.batch.submit import SubmitJournal
from prefect_pollers.client import shared_client
from prefect_pollers.durable.records import (
    HandedOverJob,
    Handover,
    batch_id,
    durable_store,
    read_handover,
    read_outcomes,
    suspend_key,
    write_handover,
)
from prefect_pollers.engine import (
    JobRef,
    PhaseDeadlineError,
    PollerError,
    PollPolicy,
    WaitTimeoutError,
)
from prefect_pollers.observed import observed_wait
from prefect_pollers.providers.base import JobApiCredentials, ResultT

SUSPEND_TIMEOUT_MARGIN_S = 600
"""Added to the latest job deadline: the poller records the timeout outcome first."""
NAMED_JOBS = 10
"""How many job ids the handover's log line names."""


class DurableWait(BaseModel):
    """How a batch's wait leaves its flow-run process (``run_batch(durable=...)``).

    Attributes:
        handover_after: Seconds each job is waited for in process first. A job still
            running then is expected to run long and is handed over; 0 hands over
            every job not already finished at submission.
    """

    handover_after: float = Field(30.0, ge=0)


def _require_deployment_run() -> str:
    flow_run_id = flow_run.get_id()
    if flow_run_id is None or deployment.get_id() is None:
        raise ValueError(
            "durable waits suspend the flow run, and only a deployment's flow run can be "
            "resumed: run the flow from a deployment, or pass durable=None"
        )
    return flow_run_id


def _require_saved_block(credentials: JobApiCredentials[Any]) -> tuple[str, str]:
    slug = type(credentials).get_block_type_slug()
    name = credentials._block_document_name
    if not name or getattr(credentials, "_is_anonymous", False):
        raise ValueError(
            f"durable waits need a saved {slug} block: the poller service loads it by name "
            f"(save it with .save('name') and pass {type(credentials).__name__}.load('name'))"
        )
    return slug, name


async def _wait_briefly(
    credentials: JobApiCredentials[ResultT],
    item: BatchItem,
    ref: JobRef,
    policy: PollPolicy | None,
    handover_after: float,
) -> BatchOutcome[ResultT] | None:
    """The job's outcome if it ends within ``handover_after`` s; None to hand it over."""
    logger = get_run_logger()
    if handover_after == 0 and ref.submitted_status is None:
        return None
    chosen = credentials.effective_policy(ref, policy)
    age = (datetime.now(timezone.utc) - ref.submitted_at).total_seconds()
    brief = chosen
    if chosen.deadline is None or age + handover_after < chosen.deadline:
        brief = chosen.with_(deadline=max(age + handover_after, 1e-3))
    try:
        result = await observed_wait(credentials, ref, brief, logger=logger)
    except WaitTimeoutError as exc:
        if brief is chosen or isinstance(exc, PhaseDeadlineError):
            raise  # the job's own deadline: an outcome
        return None
    return BatchOutcome.succeeded(item, result)


def _suspend_timeout(handover: Handover, credentials: JobApiCredentials[Any]) -> int | None:
    ends = []
    for job in handover.jobs:
        deadline = credentials.effective_policy(job.ref, handover.policy).deadline
        if deadline is None:
            return None
        ends.append(job.ref.submitted_at.timestamp() + deadline)
    now = datetime.now(timezone.utc).timestamp()
    return math.ceil(max(ends) - now) + SUSPEND_TIMEOUT_MARGIN_S


async def run_batch_durably(
    credentials: JobApiCredentials[ResultT],
    items: Sequence[BatchItem],
    concurrency: int,
    policy: PollPolicy | None,
    title: str,
    durable: DurableWait,
) -> list[BatchOutcome[ResultT]]:
    """Run a validated batch, handing long jobs to the poller service; see the module.

    Raises:
        ValueError: not a deployment's flow run, or credentials not from a saved block.
        Pause: (Prefect's) the flow run is suspended; its process exits.
    """
    flow_run_id = _require_deployment_run()
    slug, name = _require_saved_block(credentials)
    logger = get_run_logger()
    batch = batch_id([item.key for item in items])
    store = durable_store()
    handover = await read_handover(store, flow_run_id, batch)
    if handover is not None:
        recorded = {**handover.finished, **await read_outcomes(store, flow_run_id, batch)}
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
    semaphore = asyncio.Semaphore(concurrency)
    finished: dict[str, BatchOutcome[ResultT]] = {}
    running: dict[str, HandedOverJob] = {}

    async def one(item: BatchItem) -> None:
        async with semaphore:
            try:
                ref = await journal.submit(item)
                outcome = await _wait_briefly(
                    credentials, item, ref, policy, durable.handover_after
                )
            except PollerError as exc:
                outcome = BatchOutcome.failed(item, exc)
            if outcome is None:
                running[item.key] = HandedOverJob(key=item.key, label=item.label, ref=ref)
                return
            finished[item.key] = outcome
        await progress.finished_one()

    client = shared_client(credentials)
    async with SubmitJournal(credentials, client, items, get_result_store()) as journal:
        await asyncio.gather(*(one(item) for item in items))
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
    await write_handover(store, handover)
    return await _after_handover(credentials, items, handover, dict(finished), title)


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
        "%s: %d %s jobs handed over to the poller service (%s%s); suspending the flow run",
        title,
        len(waiting),
        credentials.provider,
        ids,
        more,
    )
    await asuspend_flow_run(
        key=suspend_key(handover.batch_id),
        timeout=_suspend_timeout(handover, credentials),
    )
    logger.warning(
        "%s: resumed before the poller service recorded %d outcomes: waiting for them here",
        title,
        len(waiting),
    )

    by_key = {item.key: item for item in items}

    async def one(job: HandedOverJob) -> BatchOutcome[Any]:
        item = by_key[job.key]
        try:
            result = await observed_wait(credentials, job.ref, handover.policy, logger=logger)
        except PollerError as exc:
            return BatchOutcome.failed(item, exc)
        return BatchOutcome.succeeded(item, result)

    waited = await asyncio.gather(*(one(job) for job in waiting))
    recorded.update({outcome.key: outcome for outcome in waited})
    return [recorded[item.key] for item in items]
