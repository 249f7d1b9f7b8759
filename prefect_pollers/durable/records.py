"""What a durable wait hands over, and what the poller service hands back.

Both are JSON records (a poller or flow of a later version reads them, new fields
taking their defaults) in Prefect's default result storage (``~/.prefect/storage``,
or the block named by ``PREFECT_DEFAULT_RESULT_STORAGE_BLOCK``), under keys made
from the flow run id and the batch: the storage the submitted refs are recorded in,
so what re-attaching a retried run needs, a poller needs too, and nothing else.
Prefect Variables would be discoverable through the API but hold at most 5,000
characters (a batch of refs is larger); events are dropped while the API is down.
The poller finds its work from Prefect (suspended flow runs) and reads these
records: it keeps no state of its own.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from prefect.results import ResultStore
from pydantic import BaseModel, Field

from prefect_pollers.batch.models import BatchOutcome
from prefect_pollers.engine import JobRef, PollPolicy

KEY_PREFIX = "prefect-pollers-durable"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class HandedOverJob(BaseModel):
    """A job of a batch that the poller service waits for.

    Attributes:
        key: The batch item's idempotency key.
        label: The item's label, for logs.
        ref: The submitted job.
        next_poll_at: When the flow's wait would have polled next (its pace, kept
            across the handover); None when the flow never polled it (the poller
            then follows the policy from submission).
    """

    key: str
    label: str
    ref: JobRef
    next_poll_at: datetime | None = None


class Handover(BaseModel):
    """What a suspended flow run's batch waits for: everything the poller needs.

    Attributes:
        flow_run_id: The suspended flow run.
        batch_id: Which of the run's batches (a digest of its item keys).
        block_type_slug: The credentials block's type, e.g. ``exona-credentials``.
        block_document_name: The saved block's name: the poller loads it by name.
        policy: The poll policy of every wait (None: the provider's preset).
        jobs: The jobs still running when the flow run suspended.
        finished: Outcomes the flow already had (jobs that ended before the handover).
        title: The batch's title (logs, the progress artifact).
        progress_artifact_id: The batch's progress artifact, which the poller updates.
        handed_over_at: When the flow recorded it.
    """

    flow_run_id: str
    batch_id: str
    block_type_slug: str
    block_document_name: str
    policy: PollPolicy | None = None
    jobs: list[HandedOverJob]
    finished: dict[str, BatchOutcome[Any]] = Field(default_factory=dict)
    title: str = "batch"
    progress_artifact_id: UUID | None = None
    handed_over_at: datetime = Field(default_factory=_utcnow)

    @property
    def total(self) -> int:
        """How many jobs the batch has."""
        return len(self.jobs) + len(self.finished)

    @property
    def block_name(self) -> str:
        """``slug/name``, as ``Block.aload`` takes it."""
        return f"{self.block_type_slug}/{self.block_document_name}"


def batch_id(keys: Sequence[str]) -> str:
    """A stable id of a batch: a digest of its items' keys, in order."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def durable_store() -> ResultStore:
    """The store of handovers and outcomes: Prefect's default result storage.

    Not cached in memory: another process (the poller, the resumed flow) writes them.
    """
    return ResultStore(cache_result_in_memory=False)


def suspend_key(batch: str) -> str:
    """The key a flow run suspends with for a batch: stable, so that it suspends once."""
    return f"{KEY_PREFIX}-{batch}"


def handover_key(flow_run_id: str, batch: str) -> str:
    """Where a flow run's batch records its handover."""
    return f"{KEY_PREFIX}-handover-{flow_run_id}-{batch}"


def outcomes_key(flow_run_id: str, batch: str) -> str:
    """Where the poller records the handed-over jobs' outcomes, by item key."""
    return f"{KEY_PREFIX}-outcomes-{flow_run_id}-{batch}"


def index_key(flow_run_id: str) -> str:
    """Where a flow run lists the batches it handed over (a run may have several)."""
    return f"{KEY_PREFIX}-index-{flow_run_id}"


def dump_outcome(outcome: BatchOutcome[Any]) -> dict[str, Any]:
    """An outcome as JSON, naming its result's model so that it is typed again on load."""
    data = outcome.model_dump(mode="json")
    if isinstance(outcome.result, BaseModel):
        model = type(outcome.result)
        data["result_model"] = f"{model.__module__}:{model.__qualname__}"
    return data


def load_outcome(data: dict[str, Any]) -> BatchOutcome[Any]:
    """An outcome from :func:`dump_outcome`, its result an instance of its model again.

    Raises:
        ValueError: the named result model is not a pydantic model.
    """
    data = dict(data)
    named = data.pop("result_model", None)
    if named is None:
        return BatchOutcome.model_validate(data)
    module, _, name = named.partition(":")
    model = getattr(importlib.import_module(module), name, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(f"a recorded outcome names {named!r}, which is not a result model")
    return BatchOutcome[model].model_validate(data)  # type: ignore[valid-type]


async def _read(store: ResultStore, key: str) -> Any:
    if not await store.aexists(key):
        return None
    return (await store.aread(key)).result


async def read_handover(store: ResultStore, flow_run_id: str, batch: str) -> Handover | None:
    """The recorded handover of a batch, if any."""
    found = await _read(store, handover_key(flow_run_id, batch))
    if not isinstance(found, dict):
        return None
    finished = {key: load_outcome(data) for key, data in found.get("finished", {}).items()}
    return Handover.model_validate({**found, "finished": finished})


async def read_handovers(store: ResultStore, flow_run_id: str) -> list[Handover]:
    """Every handover a flow run recorded."""
    batches = await _read(store, index_key(flow_run_id)) or []
    found = [await read_handover(store, flow_run_id, batch) for batch in batches]
    return [handover for handover in found if handover is not None]


async def write_handover(store: ResultStore, handover: Handover) -> None:
    """Record a handover, then list its batch in the flow run's index."""
    data = handover.model_dump(mode="json", exclude={"finished"})
    data["finished"] = {key: dump_outcome(o) for key, o in handover.finished.items()}
    await store.awrite(data, key=handover_key(handover.flow_run_id, handover.batch_id))
    batches: list[str] = await _read(store, index_key(handover.flow_run_id)) or []
    if handover.batch_id not in batches:
        await store.awrite([*batches, handover.batch_id], key=index_key(handover.flow_run_id))


async def read_outcomes(
    store: ResultStore, flow_run_id: str, batch: str
) -> dict[str, BatchOutcome[Any]]:
    """The outcomes the poller recorded for a batch, by item key (empty if none yet)."""
    found = await _read(store, outcomes_key(flow_run_id, batch))
    if not isinstance(found, dict):
        return {}
    return {key: load_outcome(data) for key, data in found.items()}


async def write_outcomes(
    store: ResultStore, flow_run_id: str, batch: str, outcomes: dict[str, BatchOutcome[Any]]
) -> None:
    """Record (replace) the outcomes of a batch's handed-over jobs."""
    data = {key: dump_outcome(outcome) for key, outcome in outcomes.items()}
    await store.awrite(data, key=outcomes_key(flow_run_id, batch))
