"""`make demo`: a batch on the local simulator, on Prefect's embedded server, printed.

Starts the provider simulator on loopback with scaled time, runs the example flow
of the chosen provider against it, prints the results table and the simulator's
counters. With ``PREFECT_API_URL`` set, the flow runs against that server instead
(and shows in its UI).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

from prefect_pollers import JobApiCredentials
from prefect_pollers.testing.registry import DEMO_TIME_SCALE, provider_entry
from prefect_pollers.testing.simulator import SimulatorConfig, running_simulator

DATA = Path(__file__).parent / "data"


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print rows as an aligned text table."""
    widths = {c: max(len(c), *(len(str(r.get(c) or "")[:70]) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c) or "")[:70].ljust(widths[c]) for c in columns))


Credentials = JobApiCredentials[Any]


async def demo_exona(credentials: Credentials) -> list[dict[str, Any]]:
    """Scan the sample portfolio; one company's site is unreachable, so it fails."""
    from flows.batch_scans import batch_scans

    rows = await batch_scans(
        csv_path=str(DATA / "companies.csv"), credentials=credentials, concurrency=5
    )
    print_table([r.model_dump() for r in rows], ["company", "status", "risk_level", "error"])
    return [r.model_dump() for r in rows]


async def demo_twyn(credentials: Credentials) -> list[dict[str, Any]]:
    """A small Twyn sweep: two scenarios x two parameter values; one scenario fails."""
    from flows.scenario_sweep import scenario_sweep

    rows = await scenario_sweep(
        scenarios=["heatwave", "grid-failure"], grid={"days": [3, 7]}, credentials=credentials
    )
    print_table([r.model_dump() for r in rows], ["scenario", "config", "status", "error"])
    return [r.model_dump() for r in rows]


async def demo_apixo(credentials: Credentials) -> list[dict[str, Any]]:
    """Prompts x models, each model on its own schedule; one prompt is refused."""
    from flows.generation_grid import generation_grid

    rows = await generation_grid(
        prompts=["a red fox in the snow", "a lighthouse at dusk", "please fail this one"],
        models=["nano-banana", "flux-2", "suno"],
        credentials=credentials,
    )
    print_table(
        [r.model_dump() for r in rows], ["model", "prompt", "status", "result_urls", "error"]
    )
    return [r.model_dump() for r in rows]


async def demo_modelroute(credentials: Credentials) -> list[dict[str, Any]]:
    """90 executions through one rate limit of 60 requests per minute."""
    from flows.execution_batch import execution_batch

    executions = [{"model": "image-gen", "input": {"prompt": f"image {i}"}} for i in range(90)]
    rows = await execution_batch(executions=executions, credentials=credentials)
    print_table(
        [r.model_dump() for r in rows[:15]], ["model", "status", "execution_id", "cost", "error"]
    )
    print(f"... {len(rows)} executions in all")
    return [r.model_dump() for r in rows]


async def demo_generic(credentials: Credentials) -> list[dict[str, Any]]:
    """Jobs on an API known only by its HttpJobApi declaration; one kind fails."""
    from flows.generic_jobs import generic_jobs

    jobs = [
        {"kind": kind, "params": {"n": i}}
        for i, kind in enumerate(["render", "transcode", "fail-export", "thumbnail"])
    ]
    rows = await generic_jobs(jobs=jobs, api=credentials)
    print_table([r.model_dump() for r in rows], ["kind", "status", "job_id", "output", "error"])
    return [r.model_dump() for r in rows]


async def demo_provider_batch(credentials: Credentials) -> list[dict[str, Any]]:
    """Support tickets classified in one provider batch; one ticket's request fails."""
    from flows.ticket_triage import ticket_triage

    rows = await ticket_triage(csv_path=str(DATA / "tickets.csv"), credentials=credentials)
    print_table([r.model_dump() for r in rows], ["ticket", "subject", "status", "answer", "error"])
    return [r.model_dump() for r in rows]


DEMOS: dict[str, Any] = {
    "exona": demo_exona,
    "twyn": demo_twyn,
    "apixo": demo_apixo,
    "modelroute": demo_modelroute,
    "generic": demo_generic,
    "openai-batch": demo_provider_batch,
    "anthropic-batch": demo_provider_batch,
}


def main() -> None:
    """Run the chosen provider's demo on a fresh simulator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="exona", choices=sorted(DEMOS))
    args = parser.parse_args()
    config = SimulatorConfig(
        time_scale=DEMO_TIME_SCALE, seed=42, failure_rate=0.05, batch_duration=(60.0, 180.0)
    )
    started = time.monotonic()
    where = os.environ.get("PREFECT_API_URL") or "Prefect's embedded server"
    with running_simulator(config) as sim:
        print(f"simulator on {sim.url} (time x{DEMO_TIME_SCALE}); flow runs on {where}")
        credentials = provider_entry(args.provider).simulator_block(
            sim.url, api_key=config.api_key, time_scale=DEMO_TIME_SCALE
        )
        asyncio.run(DEMOS[args.provider](credentials))
        stats = sim.stats()[args.provider]
    created = (
        f"{stats['batches_created']} provider batches created"
        if "batches_created" in stats
        else f"{stats['submits']} submits"
    )
    print(
        f"\n{args.provider}: {created}, {stats['status_calls']} status calls, "
        f"{stats['http_429']} HTTP 429, {stats['duplicate_submits']} duplicate submits; "
        f"{time.monotonic() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
