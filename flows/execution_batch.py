"""A batch of ModelRoute executions that shares one rate limit without collecting 429s.

All waits of the batch share the credentials block's rate-limit gate: when
``X-RateLimit-Remaining`` reaches 0 they hold until ``X-RateLimit-Reset``. Each
execution's outcome (completed, failed, cancelled, expired) is its own row, with
its output, tokens, cost and latency; a table artifact sums the batch up.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prefect import flow
from pydantic import BaseModel

from prefect_pollers import BatchItem, ModelRouteCredentials, Outcome, cancel_remote_jobs, run_batch
from prefect_pollers.events.tables import publish_table
from prefect_pollers.ledger.idempotency import default_scope
from prefect_pollers.providers import load_credentials


class ExecutionRow(BaseModel):
    """One execution's line in the table."""

    model: str
    status: Outcome
    execution_id: str | None = None
    output_tokens: int | None = None
    cost: Decimal | None = None
    latency_ms: int | None = None
    error: str | None = None


@flow(
    name="execution-batch",
    description="ModelRoute executions within the rate limit.",
    on_cancellation=[cancel_remote_jobs],
)
async def execution_batch(
    executions: list[dict[str, Any]],
    credentials: ModelRouteCredentials | str = "modelroute",
    concurrency: int = 20,
    artifact_key: str = "modelroute-execution-batch",
) -> list[ExecutionRow]:
    """Run every execution (``{"model": ..., "input": {...}}``) and tabulate the outcomes.

    Args:
        executions: The executions to run.
        credentials: A ``ModelRouteCredentials`` block, or the name of a saved one.
        concurrency: Executions in flight at once (the rate limit is shared anyway).
        artifact_key: Key of the result table artifact.
    """
    creds = await load_credentials(ModelRouteCredentials, credentials)
    prefix = default_scope()
    items = [
        BatchItem(label=str(e.get("model")), key=f"{prefix}:{index}", request=e)
        for index, e in enumerate(executions)
    ]
    outcomes = await run_batch(creds, items, concurrency=concurrency, title="ModelRoute batch")
    rows = [
        ExecutionRow(
            model=item.label,
            status=outcome.outcome,
            execution_id=outcome.job_id,
            output_tokens=outcome.result.usage.output_tokens if outcome.result else None,
            cost=outcome.result.cost if outcome.result else None,
            latency_ms=outcome.result.latency_ms if outcome.result else None,
            error=outcome.error,
        )
        for item, outcome in zip(items, outcomes, strict=True)
    ]
    await publish_table(artifact_key, "ModelRoute executions", rows)
    return rows
