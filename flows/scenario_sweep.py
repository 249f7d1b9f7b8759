"""A Twyn scenario sweep: one simulation per combination of parameters, a few at a time.

Every combination of the ``grid``'s values is simulated for every scenario, with
bounded concurrency; each simulation's phases are logged as they change, a failed
simulation becomes an error row, and a table artifact sums the sweep up.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from prefect import flow
from pydantic import BaseModel

from prefect_pollers import (
    BatchItem,
    DurableWait,
    Outcome,
    TwynCredentials,
    cancel_remote_jobs,
    run_batch,
)
from prefect_pollers.events.tables import publish_table
from prefect_pollers.ledger.idempotency import default_scope
from prefect_pollers.providers import load_credentials


class SimulationRow(BaseModel):
    """One simulation's line in the sweep table."""

    scenario: str
    config: str
    status: Outcome
    simulation_id: str | None = None
    results: str | None = None
    error: str | None = None


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values.

    Example: ``{"a": [1, 2]}`` gives ``[{"a": 1}, {"a": 2}]``.
    """
    empty = [name for name, values in grid.items() if not values]
    if empty:
        raise ValueError(f"grid parameter(s) with no values: {', '.join(empty)}")
    names = sorted(grid)
    combos = itertools.product(*(grid[n] for n in names))
    return [dict(zip(names, combo, strict=True)) for combo in combos]


@flow(
    name="scenario-sweep",
    description="Twyn simulations over a grid of scenario parameters.",
    on_cancellation=[cancel_remote_jobs],
)
async def scenario_sweep(
    scenarios: list[str],
    grid: dict[str, list[Any]] | None = None,
    credentials: TwynCredentials | str = "twyn",
    concurrency: int = 5,
    artifact_key: str = "twyn-scenario-sweep",
    durable: DurableWait | None = None,
) -> list[SimulationRow]:
    """Simulate every scenario with every combination of the grid.

    Args:
        scenarios: Scenario names.
        grid: Parameter name -> values to sweep (an empty grid runs each scenario once).
        credentials: A ``TwynCredentials`` block, or the name of a saved one.
        concurrency: Simulations in flight at once.
        artifact_key: Key of the result table artifact.
        durable: Hand the simulations still running after ``durable.handover_after``
            seconds to the poller service (``prefect-pollers poller``) and suspend
            the flow run until they end, releasing its worker; a deployment's run only.
    """
    creds = await load_credentials(TwynCredentials, credentials)
    configs = expand_grid(grid or {})
    prefix = default_scope()
    items = [
        BatchItem(
            label=scenario,
            key=f"{prefix}:{scenario}:{json.dumps(config, sort_keys=True)}",
            request={"scenario": scenario, "config": config},
        )
        for scenario in scenarios
        for config in configs
    ]
    outcomes = await run_batch(
        creds, items, concurrency=concurrency, title="Twyn sweep", durable=durable
    )
    rows = [
        SimulationRow(
            scenario=item.label,
            config=json.dumps(item.request["config"], sort_keys=True),
            status=outcome.outcome,
            simulation_id=outcome.job_id,
            results=json.dumps(outcome.result.results, sort_keys=True) if outcome.result else None,
            error=outcome.error,
        )
        for item, outcome in zip(items, outcomes, strict=True)
    ]
    await publish_table(artifact_key, "Twyn scenario sweep", rows)
    return rows
