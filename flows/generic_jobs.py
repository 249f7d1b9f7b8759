"""Jobs on any JSON job API declared with ``HttpJobApi``, here the simulator's generic API.

``simulator_generic_api`` is the declaration of an API prefect-pollers has no code
for: auth header, submit body, where the id and status live, which statuses end
the job, where errors and results are, how to cancel. Save such a block once
(``HttpJobApi(...).save("render-api")``) and pass its name to this flow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel

from prefect_pollers import (
    BatchItem,
    DurableWait,
    HttpJobApi,
    Outcome,
    cancel_remote_jobs,
    run_batch,
)
from prefect_pollers.events.tables import publish_table
from prefect_pollers.ledger.idempotency import default_scope
from prefect_pollers.providers import load_credentials
from prefect_pollers.testing.registry import provider_entry


def simulator_generic_api(base_url: str, api_key: str, **overrides: Any) -> HttpJobApi:
    """The declaration of the simulator's generic job API (``/generic/v2``) at ``base_url``.

    The declaration itself is the registry's (``prefect_pollers.testing.registry``).
    """
    block = provider_entry("generic").block(base_url, api_key, **overrides)
    assert isinstance(block, HttpJobApi)
    return block


class GenericJobRow(BaseModel):
    """One job's line in the table."""

    kind: str
    status: Outcome
    job_id: str | None = None
    output: str | None = None
    error: str | None = None


@flow(
    name="generic-jobs",
    description="Jobs on a JSON job API declared as an HttpJobApi block.",
    on_cancellation=[cancel_remote_jobs],
)
async def generic_jobs(
    jobs: list[dict[str, Any]],
    api: HttpJobApi | str = "generic",
    concurrency: int = 5,
    artifact_key: str = "generic-jobs",
    durable: DurableWait | None = None,
) -> list[GenericJobRow]:
    """Run every job (the API's request fields, e.g. ``{"kind": ..., "params": {...}}``).

    Args:
        jobs: The job requests.
        api: An ``HttpJobApi`` block, or the name of a saved one.
        concurrency: Jobs in flight at once.
        artifact_key: Key of the result table artifact.
        durable: Hand the jobs still running after ``durable.handover_after`` seconds
            to the poller service and suspend the flow run until they end.
    """
    block = await load_credentials(HttpJobApi, api)
    prefix = default_scope()
    items = [
        BatchItem(label=str(job.get("kind", index)), key=f"{prefix}:{index}", request=job)
        for index, job in enumerate(jobs)
    ]
    outcomes = await run_batch(
        block, items, concurrency=concurrency, title=f"{block.api_name} jobs", durable=durable
    )
    rows = [
        GenericJobRow(
            kind=item.label,
            status=outcome.outcome,
            job_id=outcome.job_id,
            output=str(outcome.result.output) if outcome.result else None,
            error=outcome.error,
        )
        for item, outcome in zip(items, outcomes, strict=True)
    ]
    await publish_table(artifact_key, f"{block.api_name} jobs", rows)
    return rows
