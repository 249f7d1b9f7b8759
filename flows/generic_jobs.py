"""Jobs on any JSON job API declared with ``HttpJobApi``, here the simulator's generic API.

``simulator_generic_api`` is the declaration of an API prefect-pollers has no code
for: auth header, submit body, where the id and status live, which statuses end
the job, where errors and results are, how to cancel. Save such a block once
(``HttpJobApi(...).save("render-api")``) and pass its name to this flow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel

from prefect_pollers import HttpJobApi, PollPolicy
from prefect_pollers.batch import BatchItem, publish_table, run_batch
from prefect_pollers.cancellation import cancel_remote_jobs
from prefect_pollers.providers.base import load_credentials


def simulator_generic_api(base_url: str, api_key: str, **overrides: Any) -> HttpJobApi:
    """The declaration of the simulator's generic job API (``/generic/v2``)."""
    fields: dict[str, Any] = {
        "api_name": "generic",
        "base_url": base_url,
        "api_key": api_key,
        "auth_header": "X-Auth-Token",
        "auth_scheme": "",
        "submit_path": "tasks",
        "submit_body": "{task: {kind: kind, params: params}}",
        "job_id_field": "task.uid",
        "status_url": "tasks/{job_id}",
        "status_field": "task.state.name",
        "succeeded": ["DONE"],
        "failed": ["ERROR"],
        "cancelled": ["ABORTED"],
        "expired": ["TIMED_OUT"],
        "running": ["QUEUED", "WORKING"],
        "error_code_field": "task.state.reason.code",
        "error_message_field": "task.state.reason.text",
        "result_url": "tasks/{job_id}/output",
        "result_field": "output",
        "cancel_url": "tasks/{job_id}/abort",
        "policy": PollPolicy(interval=5.0, deadline=600.0),
    }
    return HttpJobApi(**{**fields, **overrides})


class GenericJobRow(BaseModel):
    """One job's line in the table."""

    kind: str
    status: str
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
) -> list[GenericJobRow]:
    """Run every job (the API's request fields, e.g. ``{"kind": ..., "params": {...}}``).

    Args:
        jobs: The job requests.
        api: An ``HttpJobApi`` block, or the name of a saved one.
        concurrency: Jobs in flight at once.
        artifact_key: Key of the result table artifact.
    """
    block = await load_credentials(HttpJobApi, api)
    prefix = flow_run.get_id() or "local"
    items = [
        BatchItem(label=str(job.get("kind", index)), key=f"{prefix}:{index}", request=job)
        for index, job in enumerate(jobs)
    ]
    outcomes = await run_batch(block, items, concurrency=concurrency, title=f"{block.api_name} jobs")
    rows = [
        GenericJobRow(
            kind=item.label,
            status=outcome.outcome,
            job_id=outcome.job_id,
            output=str(outcome.result.output) if outcome.result else None,
            error=outcome.error,
        )
        for item, outcome in zip(items, outcomes)
    ]
    await publish_table(artifact_key, f"{block.api_name} jobs", rows)
    return rows
