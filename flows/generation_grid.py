"""APIXO generations: every prompt with every model, each model on its own schedule.

Each task waits on its model's schedule from the APIXO guide (e.g. nano-banana polls
every 3 s after 5 s, sora-2 every 15 s after 60 s), with bounded concurrency; a
failed generation becomes an error row; a table artifact lists the result URLs.

With ``request_type="callback"`` and a block whose callbacks are on
(``callback_base_url`` and ``webhook_secret``, the receiver of ``make webhooks``),
APIXO's callback ends each wait: one status call per task, polling only as a slow
safety net.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel

from prefect_pollers import ApixoCredentials, BatchItem, Outcome, cancel_remote_jobs, run_batch
from prefect_pollers.events.tables import publish_table
from prefect_pollers.ledger.idempotency import default_scope
from prefect_pollers.providers import load_credentials


class GenerationRow(BaseModel):
    """One generation's line in the table."""

    prompt: str
    model: str
    status: Outcome
    task_id: str | None = None
    result_urls: list[str] | None = None
    error: str | None = None


@flow(
    name="generation-grid",
    description="APIXO generations: prompts x models.",
    on_cancellation=[cancel_remote_jobs],
)
async def generation_grid(
    prompts: list[str],
    models: list[str],
    credentials: ApixoCredentials | str = "apixo",
    concurrency: int = 5,
    artifact_key: str = "apixo-generation-grid",
    request_type: Literal["async", "callback"] = "async",
) -> list[GenerationRow]:
    """Generate every prompt with every model.

    Args:
        prompts: The prompts.
        models: APIXO model names (``nano-banana``, ``flux-2``, ``sora-2``, ...).
        credentials: An ``ApixoCredentials`` block, or the name of a saved one.
        concurrency: Generations in flight at once.
        artifact_key: Key of the result table artifact.
        request_type: ``async`` (poll) or ``callback`` (the block's webhook
            receiver ends each wait).
    """
    if not prompts or not models:
        raise ValueError("give at least one prompt and one model")
    creds = await load_credentials(ApixoCredentials, credentials)
    prefix = default_scope()
    items = [
        BatchItem(
            label=f"{model}: {prompt}",
            key=f"{prefix}:{model}:{index}",
            request={"model": model, "input": {"prompt": prompt}, "request_type": request_type},
        )
        for index, prompt in enumerate(prompts)
        for model in models
    ]
    outcomes = await run_batch(creds, items, concurrency=concurrency, title="APIXO generations")
    rows = [
        GenerationRow(
            prompt=item.request["input"]["prompt"],
            model=item.request["model"],
            status=outcome.outcome,
            task_id=outcome.job_id,
            result_urls=outcome.result.result_urls if outcome.result else None,
            error=outcome.error,
        )
        for item, outcome in zip(items, outcomes, strict=True)
    ]
    await publish_table(artifact_key, "APIXO generations", rows)
    return rows
