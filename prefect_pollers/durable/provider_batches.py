"""Durable provider batches: the batches wait in the poller service, not in the flow run.

``run_provider_batch(..., durable=DurableWait())`` creates (or finds) every provider
batch in one ``provider-batch`` task run, as in process, and waits for each for up
to ``handover_after`` seconds. The batches still running then (the usual case: a
provider batch takes minutes to 24 h) are handed over to the poller service, one
handed-over job per provider batch, and the flow run suspends: its infrastructure is
released while the batches run. The poller waits for them (each batch's policy, its
rate limits, callbacks) and resumes the run when every one has ended. The run starts
again from the top: a second ``provider-batch`` task run finds every batch in the
ledger (nothing is created twice), polls each once (it has ended) and streams its
results into one outcome per item.

A run resumed by hand before its batches ended waits for them in process. A run
cancelled while suspended has its batches cancelled by the poller
(:mod:`~prefect_pollers.durable.poller`); a re-run of it finds them and keeps the
results that arrived.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect.logging import get_run_logger

from prefect_pollers.batch.models import BatchItem
from prefect_pollers.batch.outcome_files import OutcomeFiles
from prefect_pollers.batch.provider_batches import provider_batch_task
from prefect_pollers.durable.handover import (
    HandOver,
    require_deployment_run,
    require_saved_block,
    wait_briefly,
    waiting_for,
)
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
from prefect_pollers.engine import JobRef, PollPolicy
from prefect_pollers.engine.wait import StatusHook
from prefect_pollers.ledger import Ledger
from prefect_pollers.providers.provider_batch import ProviderBatchCredentials, ProviderBatchJob

BATCH_PREFIX = "provider-batch"
"""Put before the item keys in the durable batch id (apart from ``run_batch``'s)."""


async def run_provider_batch_durably(
    credentials: ProviderBatchCredentials,
    items: Sequence[BatchItem],
    *,
    policy: PollPolicy | None,
    title: str,
    ledger: Ledger | None,
    handover_after: float,
) -> OutcomeFiles:
    """Run provider batches, handing the long ones to the poller service; see the module.

    Raises:
        ValueError: not a deployment's flow run, or credentials not from a saved block.
        Pause: (Prefect's) the flow run is suspended; its process exits.
    """
    flow_run_id = require_deployment_run()
    slug, name = require_saved_block(credentials)
    logger = get_run_logger()
    batch = batch_id([BATCH_PREFIX, *(item.key for item in items)])
    records = durable_records()
    handover = await read_handover(records, flow_run_id, batch)
    if handover is None:
        handed: list[HandedOverJob] = []

        async def wait(ref: JobRef, on_status: StatusHook) -> ProviderBatchJob | None:
            verdict = await wait_briefly(
                credentials, ref, policy, handover_after, logger=logger, on_status=on_status
            )
            if not isinstance(verdict, HandOver):
                return verdict
            handed.append(
                HandedOverJob(
                    key=ref.job_id,
                    label=f"provider batch {ref.job_id}",
                    ref=ref,
                    next_poll_at=verdict.next_poll_at,
                )
            )
            return None

        outcomes = await provider_batch_task(
            credentials, items, policy=policy, title=title, ledger=ledger, wait=wait
        )
        if not handed:
            return outcomes
        handover = Handover(
            flow_run_id=flow_run_id,
            batch_id=batch,
            block_type_slug=slug,
            block_document_name=name,
            policy=policy,
            jobs=sorted(handed, key=lambda job: job.key),
            title=title,
        )
        await write_handover(records, handover)
    recorded = await read_outcomes(records, flow_run_id, batch)
    waiting = [job for job in handover.jobs if job.key not in recorded]
    if waiting:
        logger.info(
            "%s (%s); suspending the flow run",
            waiting_for(handover, credentials.provider, len(waiting)),
            ", ".join(job.ref.job_id for job in waiting),
        )
        await suspend_for_poller(suspend_key(batch))
        logger.warning(
            "%s: resumed before the poller service saw %d provider batches end: "
            "waiting for them here",
            title,
            len(waiting),
        )
    else:
        logger.info(
            "%s: the poller service saw every handed-over provider batch end (%d); "
            "reading their results",
            title,
            len(handover.jobs),
        )
    return await provider_batch_task(credentials, items, policy=policy, title=title, ledger=ledger)
