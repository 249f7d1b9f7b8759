"""Submitting a batch's items once: refs recorded in pages, found again on a re-run.

A ref recorded per submit costs a result-store write each (measured: 13 % of the
event loop at 80 submits/s, the largest cost after HTTP). A :class:`SubmitJournal`
records the batch's new refs in pages instead: one write every ``flush_interval``
seconds (or ``page_size`` refs), under keys made from the provider, a digest of the
base URL and the batch (its item keys), so a retried task or flow run with the same
items reads them back and re-attaches. A job submitted less than
``flush_interval`` before its process is killed can be submitted again.

Refs recorded one by one (by :func:`~prefect_pollers.tasks.submit_job`, or by an
earlier version) are looked up too, by item key, so a batch also re-attaches to
jobs its per-job mode submitted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from prefect.results import ResultStore
from prefect.runtime import flow_run

from prefect_pollers.batch.models import BatchItem
from prefect_pollers.client import JobApiClient
from prefect_pollers.engine import JobRef
from prefect_pollers.events import announce_submitted
from prefect_pollers.idempotency import record_key
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.webhooks.subscription import listening_for_submit

FLUSH_INTERVAL_S = 0.25
"""Seconds between two writes of the journal (a crash loses at most this many seconds)."""
PAGE_SIZE = 1_000
"""Refs that make the journal write a page at once."""

_log = logging.getLogger("prefect_pollers.batch")


def journal_key(credentials: JobApiCredentials[Any], keys: Sequence[str], page: int) -> str:
    """Where page ``page`` of the refs of the batch of item ``keys`` is recorded."""
    endpoint = hashlib.sha256(credentials.base_url.encode()).hexdigest()[:12]
    batch = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    return f"prefect-pollers-refs-{credentials.provider}-{endpoint}-{batch}-{page:05d}"


class SubmitJournal:
    """Submits each item of one batch at most once, recording refs in pages.

    Use it as ``async with SubmitJournal(...) as journal``: entering reads the pages
    recorded so far, leaving writes the last one.

    Args:
        credentials: The provider's credentials block.
        client: The client that submits.
        items: The whole batch (its keys name the journal).
        store: The result store the pages are written to.
        flush_interval: Seconds between two page writes.
        page_size: New refs that make a page be written at once.
    """

    def __init__(
        self,
        credentials: JobApiCredentials[Any],
        client: JobApiClient[Any],
        items: Sequence[BatchItem],
        store: ResultStore,
        *,
        flush_interval: float = FLUSH_INTERVAL_S,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.credentials = credentials
        self.client = client
        self.store = store
        self.flush_interval = flush_interval
        self.page_size = page_size
        self.pages_written = 0
        self._keys = [item.key for item in items]
        self._known: dict[str, JobRef] = {}
        self._pending: dict[str, JobRef] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    async def __aenter__(self) -> SubmitJournal:
        while True:
            key = journal_key(self.credentials, self._keys, self.pages_written)
            if not await self.store.aexists(key):
                break
            page = (await self.store.aread(key)).result
            self._known.update({k: JobRef.model_validate(ref) for k, ref in page.items()})
            self.pages_written += 1
        self._flusher = asyncio.create_task(self._flush_periodically())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.flush()

    @property
    def recorded(self) -> int:
        """Refs read back or recorded by this journal (written or about to be)."""
        return len(self._known)

    async def submit(self, item: BatchItem) -> JobRef:
        """The ref of ``item``'s job: recorded earlier, or submitted now and recorded."""
        ref = self._known.get(item.key) or await self._recorded_one_by_one(item.key)
        if ref is not None:
            return ref
        flow_run_id = flow_run.get_id()
        async with listening_for_submit(self.credentials, item.request, flow_run_id):
            ref = await self.client.submit(
                item.request, idempotency_key=item.key, flow_run_id=flow_run_id
            )
        self._known[item.key] = self._pending[item.key] = ref
        announce_submitted(self.credentials, ref, log_level=logging.DEBUG)
        if len(self._pending) >= self.page_size:
            await self.flush()
        return ref

    async def flush(self) -> None:
        """Write the refs not yet recorded as a new page."""
        async with self._write_lock:
            if not self._pending:
                return
            page, self._pending = self._pending, {}
            key = journal_key(self.credentials, self._keys, self.pages_written)
            data = {k: ref.model_dump(mode="json") for k, ref in page.items()}
            try:
                await self.store.awrite(data, key=key)
            except BaseException:
                self._pending = {**page, **self._pending}  # written with the next page
                raise
            self.pages_written += 1

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception as exc:  # the next flush, or the last one, tries again
                _log.warning("could not record %d submitted refs yet: %s", len(self._pending), exc)

    async def _recorded_one_by_one(self, key: str) -> JobRef | None:
        record_at = record_key(self.credentials, key)
        if not await self.store.aexists(record_at):
            return None
        record = await self.store.aread(record_at)
        return record.result if isinstance(record.result, JobRef) else None
