"""The one per-item loop of every batch: each item to its own outcome, under a task group.

Every batch path (the per-job and batched modes, a durable batch's brief waits, the
waits it resumes in process, the poller service's waits) runs its items here: at
most ``concurrency`` at a time, each holding its slot, anything it raises turned into
that item's outcome (the batch goes on), its progress reported best effort. The items
run in one task group: when the batch itself aborts (it is cancelled, or something
that is not an item's failure escapes), every sibling is cancelled with it, so no
orphan keeps polling.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

import anyio
from pydantic import BaseModel, SecretStr

from prefect_pollers.batch.models import BatchItem, BatchOutcome
from prefect_pollers.batch.progress import BatchProgress
from prefect_pollers.providers.protocol import ResultT

if sys.version_info < (3, 11):  # pragma: no cover - the builtin from Python 3.11
    from exceptiongroup import BaseExceptionGroup

ItemWork = Callable[[BatchItem], Awaitable[ResultT | None]]
"""One item's work: its result, or None when the item was handed over (no outcome here)."""


def secrets_of(block: BaseModel) -> tuple[str, ...]:
    """Every secret value of a block (its API key, webhook secret...), to mask in outcomes."""
    found = (getattr(block, name, None) for name in type(block).model_fields)
    return tuple(
        value.get_secret_value()
        for value in found
        if isinstance(value, SecretStr) and value.get_secret_value()
    )


async def run_items(
    items: Sequence[BatchItem],
    work: ItemWork[ResultT],
    *,
    concurrency: int | None = None,
    slot: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    progress: BatchProgress | None = None,
    on_outcome: Callable[[BatchOutcome[ResultT]], None] | None = None,
    secrets: Sequence[str] = (),
) -> dict[str, BatchOutcome[ResultT]]:
    """Run ``work`` for every item; each item's outcome, by key.

    Args:
        items: The items; their keys are unique.
        work: One item's work (see :data:`ItemWork`).
        concurrency: Items in flight at once (None: no bound here).
        slot: A context held around each item's work (e.g. the block's shared
            jobs-in-flight slot).
        progress: Counts each outcome (best effort: it never fails the batch).
        on_outcome: Called with each outcome as it comes.
        secrets: Masked in the messages of outcomes built from exceptions.

    Returns:
        The outcome of every item that was not handed over.
    """
    outcomes: dict[str, BatchOutcome[ResultT]] = {}
    limit = anyio.Semaphore(concurrency) if concurrency is not None else None

    async def one(item: BatchItem) -> None:
        bound = limit if limit is not None else contextlib.nullcontext()
        async with bound, slot() if slot is not None else contextlib.nullcontext():
            try:
                result = await work(item)
                if result is None:
                    return  # handed over
                outcome = BatchOutcome.succeeded(item, result)
            except Exception as exc:  # a failure belongs to its item
                outcome = BatchOutcome.of_exception(item, exc, secrets=secrets)
        outcomes[item.key] = outcome
        if on_outcome is not None:
            on_outcome(outcome)
        if progress is not None:
            await progress.finished_one()

    try:
        async with anyio.create_task_group() as group:
            for item in items:
                group.start_soon(one, item, name=f"batch item {item.key}")
    except BaseExceptionGroup as aborted:
        # Only what is not an item's failure escapes an item: a signal (Prefect's
        # TerminationSignal when the run is cancelled, KeyboardInterrupt). Raised bare,
        # so that the flow engine knows it (a group would end the run as Crashed).
        raise first_leaf(aborted) from None
    return outcomes


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of ``group`` that is not itself a group (what aborted it)."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
