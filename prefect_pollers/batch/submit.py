"""Submitting a batch item once: its ref is recorded, and found again on a re-run."""

from __future__ import annotations

import logging
from typing import Any

from prefect.results import ResultStore
from prefect.runtime import flow_run

from prefect_pollers.batch.models import BatchItem
from prefect_pollers.client import shared_client
from prefect_pollers.engine import JobRef
from prefect_pollers.events import announce_submitted
from prefect_pollers.idempotency import record_key
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.webhooks.subscription import listening_for_submit


async def _recorded_ref(store: ResultStore, key: str) -> JobRef | None:
    if not await store.aexists(key):
        return None
    record = await store.aread(key)
    return record.result if isinstance(record.result, JobRef) else None


async def submit_once(
    credentials: JobApiCredentials[Any], item: BatchItem, store: ResultStore
) -> JobRef:
    """Submit ``item`` unless a ref is already recorded under its key; record the new ref."""
    key = record_key(credentials, item.key)
    ref = await _recorded_ref(store, key)
    if ref is not None:
        return ref
    flow_run_id = flow_run.get_id()
    async with listening_for_submit(credentials, item.request, flow_run_id):
        ref = await shared_client(credentials).submit(
            item.request, idempotency_key=item.key, flow_run_id=flow_run_id
        )
    await store.awrite(ref, key=key)
    announce_submitted(credentials, ref, log_level=logging.DEBUG)
    return ref
