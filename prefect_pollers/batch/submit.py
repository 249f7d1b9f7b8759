"""Submitting a batch's items once each, through the ledger, whatever the batch's shape.

A :class:`SubmitJournal` submits a batch's items through a
:class:`~prefect_pollers.ledger.LedgerSubmitter`: each item key is reserved before its
submit and its ref recorded, by key (never by the shape of the batch). A re-run with
one more item submits that item only; a subset, a reordering, shards whose ranges
moved, per-job ``submit_job`` calls and a second live copy of the run all find the
same rows. Refs recorded by prefect-pollers 0.1 (journal pages, per-job records) are
read and copied into the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from prefect.results import ResultStore
from prefect.runtime import flow_run

from prefect_pollers.batch.models import BatchItem
from prefect_pollers.client import JobApiClient
from prefect_pollers.engine import JobRef
from prefect_pollers.events.jobs import announce_submitted
from prefect_pollers.ledger import Ledger, LedgerSubmitter
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.webhooks.subscription import listening_for_submit


class SubmitJournal:
    """Submits each item of one batch at most once, through the ledger.

    Use it as ``async with SubmitJournal(...) as journal``.

    Args:
        credentials: The provider's credentials block.
        client: The client that submits.
        items: The whole batch (its keys find 0.1's journal pages).
        store: Where 0.1 recorded refs (read, never written).
        ledger: The ledger (the configured one by default).
    """

    def __init__(
        self,
        credentials: JobApiCredentials[Any],
        client: JobApiClient[Any],
        items: Sequence[BatchItem],
        store: ResultStore | None,
        *,
        ledger: Ledger | None = None,
    ) -> None:
        self.credentials = credentials
        self.client = client
        self.flow_run_id = flow_run.get_id()
        self._submitter = LedgerSubmitter(
            credentials,
            flow_run_id=self.flow_run_id,
            ledger=ledger,
            store=store,
            batch_keys=[item.key for item in items],
        )

    async def __aenter__(self) -> SubmitJournal:
        await self._submitter.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._submitter.__aexit__(exc_type, exc, traceback)

    @property
    def recorded(self) -> int:
        """Items whose recorded job was returned instead of submitting."""
        return self._submitter.reattached

    @property
    def created(self) -> int:
        """Jobs this journal created."""
        return self._submitter.created

    async def submit(self, item: BatchItem) -> JobRef:
        """The ref of ``item``'s job: recorded earlier, or submitted now and recorded."""

        async def send() -> JobRef:
            async with listening_for_submit(self.credentials, item.request, self.flow_run_id):
                return await self.client.submit(
                    item.request, idempotency_key=item.key, flow_run_id=self.flow_run_id
                )

        ref, created = await self._submitter.submit(item.key, item.request, send)
        if created:
            announce_submitted(self.credentials, ref, log_level=logging.DEBUG)
        return ref
