"""``DurableWait``: how a batch's wait leaves its flow-run process.

Pass it as ``run_batch(durable=...)`` (jobs, :mod:`~prefect_pollers.durable.handover`)
or ``run_provider_batch(durable=...)`` (provider batches,
:mod:`~prefect_pollers.durable.provider_batches`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from prefect_pollers.batch.models import BatchItem, BatchOutcome
from prefect_pollers.batch.outcome_files import OutcomeFiles
from prefect_pollers.durable.handover import run_batch_durably
from prefect_pollers.durable.provider_batches import run_provider_batch_durably
from prefect_pollers.engine import PollPolicy
from prefect_pollers.ledger import Ledger
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.protocol import ResultT
from prefect_pollers.providers.provider_batch import ProviderBatchCredentials


class DurableWait(BaseModel):
    """How a batch's wait leaves its flow-run process (``durable=``).

    Attributes:
        handover_after: Seconds each job (or provider batch) is waited for in process
            first. One still running then is expected to run long and is handed
            over; 0 hands over every one not already finished at submission. Any
            value works with any policy: a job whose next poll falls after it is
            handed over at once, with that poll's time (the poller keeps the pace).
    """

    handover_after: float = Field(30.0, ge=0)

    async def run_batch(
        self,
        credentials: JobApiCredentials[ResultT],
        items: Sequence[BatchItem],
        *,
        concurrency: int,
        policy: PollPolicy | None,
        title: str,
    ) -> list[BatchOutcome[ResultT]]:
        """Run a validated batch durably (:func:`run_batch_durably`): ``run_batch``'s hook."""
        return await run_batch_durably(
            credentials, items, concurrency, policy, title, self.handover_after
        )

    async def run_provider_batch(
        self,
        credentials: ProviderBatchCredentials,
        items: Sequence[BatchItem],
        *,
        policy: PollPolicy | None,
        title: str,
        ledger: Ledger | None,
    ) -> OutcomeFiles:
        """Run provider batches durably (:func:`run_provider_batch_durably`).

        ``run_provider_batch``'s hook.
        """
        return await run_provider_batch_durably(
            credentials,
            items,
            policy=policy,
            title=title,
            ledger=ledger,
            handover_after=self.handover_after,
        )
