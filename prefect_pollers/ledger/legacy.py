"""Refs recorded by prefect-pollers 0.1 in Prefect's result store, read so a run re-attaches.

Version 0.1 recorded a batch's refs in journal pages keyed by a digest of all its item
keys, and each ``submit_job`` ref in a cache record keyed by the idempotency key. A
run of this version finds them and copies them into the ledger; it never writes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from prefect.results import ResultStore

from prefect_pollers.engine import JobRef
from prefect_pollers.ledger.idempotency import record_key
from prefect_pollers.providers.base import JobApiCredentials


def journal_key(credentials: JobApiCredentials[Any], keys: Sequence[str], page: int) -> str:
    """Where 0.1 recorded page ``page`` of the refs of the batch of item ``keys``."""
    endpoint = hashlib.sha256(credentials.base_url.encode()).hexdigest()[:12]
    batch = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    return f"prefect-pollers-refs-{credentials.provider}-{endpoint}-{batch}-{page:05d}"


async def journal_refs(
    store: ResultStore, credentials: JobApiCredentials[Any], keys: Sequence[str]
) -> dict[str, JobRef]:
    """The refs 0.1 recorded in the journal pages of the batch of item ``keys``."""
    found: dict[str, JobRef] = {}
    page = 0
    while await store.aexists(key := journal_key(credentials, keys, page)):
        data = (await store.aread(key)).result
        found.update({k: JobRef.model_validate(ref) for k, ref in data.items()})
        page += 1
    return found


async def recorded_ref(
    store: ResultStore, credentials: JobApiCredentials[Any], key: str
) -> JobRef | None:
    """The ref 0.1's ``submit_job`` cached under idempotency ``key``, if any."""
    at = record_key(credentials, key)
    if not await store.aexists(at):
        return None
    result = (await store.aread(at)).result
    return result if isinstance(result, JobRef) else None
