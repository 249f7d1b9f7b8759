"""What a durable wait hands over, and what the poller service hands back.

Both live in the ledger (:mod:`prefect_pollers.ledger.durable_rows`), as rows of JSON
(a poller or flow of a later version reads them, new fields taking their defaults):
one handover per flow run and batch, one outcome per item key, each written in one
transaction as it arrives and never rewritten, so that a crash between two writes
loses nothing already written. The ledger is the one the submits are recorded in
(``PREFECT_POLLERS_LEDGER_URL``): what re-attaching a retried run needs, a poller
needs too. The poller finds its work from Prefect (suspended flow runs) and from the
open handovers; it keeps no state of its own.

prefect-pollers 0.1 kept them as documents in Prefect's result storage: those are
still read when a batch has no rows (a run it suspended resumes), and the poller
copies them into rows when it takes such a run up. They are never written.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from prefect.results import ResultStore
from pydantic import BaseModel, Field

from prefect_pollers.batch.models import BatchOutcome
from prefect_pollers.engine import JobRef, PollPolicy
from prefect_pollers.ledger import durable_rows
from prefect_pollers.ledger.store import Ledger, current_ledger

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


@dataclass(frozen=True)
class DurableRecords:
    """Where durable batches are recorded.

    Attributes:
        ledger: The ledger: handovers and outcomes as rows.
        legacy: Prefect's result storage, where 0.1 kept them (read only).
    """

    ledger: Ledger
    legacy: ResultStore


def durable_records(url: str | None = None) -> DurableRecords:
    """The records of the ledger at ``url`` (the setting by default), for this event loop.

    Results are not cached in memory: another process (the poller, the resumed flow)
    writes them.
    """
    return DurableRecords(current_ledger(url), ResultStore(cache_result_in_memory=False))


def suspend_key(batch: str) -> str:
    """The key a flow run suspends with for a batch: stable, so that it suspends once."""
    return f"{KEY_PREFIX}-{batch}"


def handover_key(flow_run_id: str, batch: str) -> str:
    """Where 0.1 recorded a flow run's batch's handover."""
    return f"{KEY_PREFIX}-handover-{flow_run_id}-{batch}"


def outcomes_key(flow_run_id: str, batch: str) -> str:
    """Where 0.1's poller recorded the handed-over jobs' outcomes, by item key."""
    return f"{KEY_PREFIX}-outcomes-{flow_run_id}-{batch}"


def index_key(flow_run_id: str) -> str:
    """Where 0.1 listed the batches a flow run handed over (a run may have several)."""
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


def _handover(data: dict[str, Any]) -> Handover:
    finished = {key: load_outcome(o) for key, o in data.get("finished", {}).items()}
    return Handover.model_validate({**data, "finished": finished})


def _dump_handover(handover: Handover) -> dict[str, Any]:
    data = handover.model_dump(mode="json", exclude={"finished"})
    data["finished"] = {key: dump_outcome(o) for key, o in handover.finished.items()}
    return data


async def _read_legacy(store: ResultStore, key: str) -> Any:
    if not await store.aexists(key):
        return None
    return (await store.aread(key)).result


async def read_handover(records: DurableRecords, flow_run_id: str, batch: str) -> Handover | None:
    """The recorded handover of a batch, if any (a row, else 0.1's document)."""
    rows = await durable_rows.handover_rows(records.ledger, flow_run_id, batch)
    if batch in rows:
        return _handover(rows[batch])
    found = await _read_legacy(records.legacy, handover_key(flow_run_id, batch))
    return _handover(found) if isinstance(found, dict) else None


async def read_handovers(records: DurableRecords, flow_run_id: str) -> list[Handover]:
    """Every handover a flow run recorded.

    A run with no rows but 0.1's documents has them (with their outcomes) copied into
    rows first, so that its outcomes are added as rows and its cancel is found.
    """
    rows = await durable_rows.handover_rows(records.ledger, flow_run_id)
    if rows:
        return [_handover(data) for data in rows.values()]
    found: list[Handover] = []
    for batch in await _read_legacy(records.legacy, index_key(flow_run_id)) or []:
        data = await _read_legacy(records.legacy, handover_key(flow_run_id, batch))
        if not isinstance(data, dict):
            continue
        outcomes = await _read_legacy(records.legacy, outcomes_key(flow_run_id, batch))
        await durable_rows.import_handover(
            records.ledger,
            flow_run_id,
            batch,
            data,
            outcomes if isinstance(outcomes, dict) else {},
        )
        found.append(_handover(data))
    return found


async def write_handover(records: DurableRecords, handover: Handover) -> None:
    """Record a handover (one transaction; a batch's handover recorded again replaces it)."""
    await durable_rows.put_handover(
        records.ledger, handover.flow_run_id, handover.batch_id, _dump_handover(handover)
    )


async def read_outcomes(
    records: DurableRecords, flow_run_id: str, batch: str
) -> dict[str, BatchOutcome[Any]]:
    """The outcomes the poller recorded for a batch, by item key (empty if none yet).

    Read by row; a batch with no rows is looked up in 0.1's document.
    """
    rows = await durable_rows.outcome_rows(records.ledger, flow_run_id, batch)
    if not rows:
        found = await _read_legacy(records.legacy, outcomes_key(flow_run_id, batch))
        rows = found if isinstance(found, dict) else {}
    return {key: load_outcome(data) for key, data in rows.items()}


async def write_outcomes(
    records: DurableRecords, flow_run_id: str, batch: str, outcomes: dict[str, BatchOutcome[Any]]
) -> None:
    """Add outcomes of a batch's handed-over jobs as rows, in one transaction.

    Nothing is rewritten: an item whose outcome is recorded already keeps it.
    """
    data = {key: dump_outcome(outcome) for key, outcome in outcomes.items()}
    await durable_rows.add_outcomes(records.ledger, flow_run_id, batch, data)
