"""Fan a batch of jobs out with bounded concurrency, inside a flow.

Each job is submitted and waited for with the Prefect tasks (two task runs per
job, named by provider and key / job id), at most ``concurrency`` at once, as
awaited coroutines under a semaphore: far cheaper than ``.submit()`` on a thread
pool. A job's failure becomes its outcome's error instead of failing the batch,
and a progress artifact follows the batch while it runs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from prefect.artifacts import (
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from prefect_pollers.engine import (
    JobCancelledError,
    JobExpiredError,
    JobFailedError,
    PollerError,
    PollPolicy,
    WaitTimeoutError,
)
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.tasks import run_job


class BatchItem(BaseModel):
    """One job of a batch.

    Attributes:
        label: How the job is shown in logs and tables (e.g. the company name).
        key: The idempotency key of its submission; unique within the batch.
        request: The provider's request model or a dict of its fields.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    label: str
    key: str = Field(min_length=1)
    request: Any


class BatchOutcome(BaseModel):
    """What became of one job of a batch.

    Attributes:
        label: The item's label.
        key: The item's idempotency key.
        outcome: ``succeeded``, ``failed``, ``cancelled``, ``expired``, ``timed_out``
            or ``error`` (a request error, e.g. bad input or the provider unreachable).
        job_id: The remote job id, when the job was submitted.
        result: The provider's result model, on success.
        error: The typed error's message, otherwise.
        error_type: The typed error's class name.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    label: str
    key: str
    outcome: str
    job_id: str | None = None
    result: Any = None
    error: str | None = None
    error_type: str | None = None


_OUTCOME_OF_ERROR: tuple[tuple[type[PollerError], str], ...] = (
    (JobFailedError, "failed"),
    (JobCancelledError, "cancelled"),
    (JobExpiredError, "expired"),
    (WaitTimeoutError, "timed_out"),
)


def outcome_of(error: PollerError) -> str:
    """The batch outcome name of a typed error."""
    for error_type, outcome in _OUTCOME_OF_ERROR:
        if isinstance(error, error_type):
            return outcome
    return "error"


def slug(text: str) -> str:
    """A Prefect artifact key made from ``text`` (lowercase letters, digits, dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "batch"


def check_batch(items: Sequence[BatchItem], concurrency: int) -> None:
    """Refuse an empty batch, a concurrency under 1 or duplicate keys, before any submit."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if not items:
        raise ValueError("the batch is empty: give at least one job")
    seen: set[str] = set()
    duplicates = sorted({item.key for item in items if item.key in seen or seen.add(item.key)})
    if duplicates:
        raise ValueError(f"duplicate idempotency keys in the batch: {', '.join(duplicates[:5])}")


async def run_batch(
    credentials: JobApiCredentials,
    items: Sequence[BatchItem],
    *,
    concurrency: int = 5,
    policy: PollPolicy | None = None,
    title: str = "batch",
) -> list[BatchOutcome]:
    """Run every item's job with at most ``concurrency`` in flight; never raises per job.

    Args:
        credentials: The provider's credentials block.
        items: The jobs; their keys must be unique.
        concurrency: Jobs in flight at once (submitted and not yet finished).
        policy: The poll policy of every wait (the provider's preset if None).
        title: Shown in the progress artifact's description.

    Returns:
        One outcome per item, in the items' order.
    """
    check_batch(items, concurrency)
    for item in items:
        credentials.parse_request(item.request)  # refuse bad input before any submit
    logger = get_run_logger()
    total = len(items)
    progress_id = await acreate_progress_artifact(
        progress=0.0, description=f"{title}: 0 of {total} jobs finished"
    )
    semaphore = asyncio.Semaphore(concurrency)
    done = 0
    step = max(1, total // 50)

    async def one(item: BatchItem) -> BatchOutcome:
        nonlocal done
        async with semaphore:
            try:
                result = await run_job(
                    credentials, item.request, idempotency_key=item.key, policy=policy
                )
                outcome = BatchOutcome(label=item.label, key=item.key, outcome="succeeded",
                                       job_id=getattr(result, "job_id", None), result=result)
            except PollerError as exc:
                outcome = BatchOutcome(label=item.label, key=item.key, outcome=outcome_of(exc),
                                       job_id=exc.job_id, error=str(exc),
                                       error_type=type(exc).__name__)
        done += 1
        if done % step == 0 or done == total:
            await aupdate_progress_artifact(
                progress_id, progress=100.0 * done / total,
                description=f"{title}: {done} of {total} jobs finished",
            )
        return outcome

    outcomes = await asyncio.gather(*(one(item) for item in items))
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
    logger.info("%s finished: %s", title,
                ", ".join(f"{n} {name}" for name, n in sorted(counts.items())))
    return list(outcomes)


async def publish_table(key: str, title: str, rows: Sequence[BaseModel]) -> None:
    """Publish batch rows as a keyed table artifact (shown on the Artifacts page).

    Rows with a ``status`` field are counted in the description.
    """
    ok = sum(getattr(row, "status", None) == "succeeded" for row in rows)
    await acreate_table_artifact(
        key=slug(key),
        table=[row.model_dump(mode="json") for row in rows],
        description=f"{title}: {ok} of {len(rows)} succeeded.",
    )
