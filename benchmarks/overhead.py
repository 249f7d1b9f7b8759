"""Orchestration overhead: our batch_scans flow against the guide's approach, no Prefect.

1,000 Exona scans on the simulator, 1-3 s each after scaling, concurrency 50, in
the same run: first the Exona guide's approach written plainly (asyncio + httpx,
a semaphore, the same poll schedule), then our ``batch_scans`` flow against a real
Prefect server: with its defaults (``task_runs="auto"``, which is batched for
1,000 jobs) and forced to a task run per job (``per_job_*``). Each runs in its
own process, with a fresh server, so ``peak_rss_mb`` is the flow process's own.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import httpx

from benchmarks.common import (
    child_env,
    emit,
    peak_rss_mb,
    prefect_server,
    run_child,
    simulator_process,
)
from prefect_pollers.batch import PER_JOB_LIMIT
from prefect_pollers.providers import exona_policy

SCALE = 1 / 30  # Exona's 30-90 s scans take 1-3 s; its Retry-After of 10 s, 0.33 s
API_KEY = "sim-key"


def companies(count: int) -> list[dict[str, str]]:
    """``count`` distinct companies."""
    return [
        {"company_name": f"Company {i}", "company_website": f"https://company{i}.test"}
        for i in range(count)
    ]


async def guide_batch(base_url: str, count: int, concurrency: int) -> int:
    """The Exona guide's client and parallel batch, async: returns completed scans."""
    policy = exona_policy(count).scaled(SCALE)
    semaphore = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    async with httpx.AsyncClient(
        base_url=base_url + "/", headers=headers, timeout=15, limits=limits
    ) as client:

        async def scan(company: dict[str, str]) -> bool:
            async with semaphore:
                response = await client.post("scans", json=company)
                response.raise_for_status()
                data = response.json()
                if data.get("status") == "completed":
                    return True
                await asyncio.sleep(policy.initial_delay)
                while True:
                    response = await client.get(f"scans/{data['id']}")
                    if response.status_code == 429:
                        await asyncio.sleep(float(response.headers.get("Retry-After", 60)))
                        continue
                    response.raise_for_status()
                    status = response.json()["status"]
                    if status in ("completed", "failed"):
                        return status == "completed"
                    retry_after = float(response.headers.get("Retry-After", 10 * SCALE))
                    await asyncio.sleep(max(retry_after, policy.interval))

        results = await asyncio.gather(*(scan(c) for c in companies(count)))
    return sum(results)


async def our_flow(base_url: str, count: int, concurrency: int, mode: str) -> int:
    """Our batch_scans flow: returns completed scans."""
    from flows.batch_scans import batch_scans
    from prefect_pollers import ExonaCredentials

    credentials = ExonaCredentials(api_key=API_KEY, base_url=base_url, policy_scale=SCALE)
    rows = await batch_scans(
        companies=companies(count),
        credentials=credentials,
        concurrency=concurrency,
        max_age_days=None,
        task_runs=mode,
    )
    return sum(row.status == "succeeded" for row in rows)


def child(args: argparse.Namespace) -> None:
    """Run one side in this process and print its figures."""
    started = time.monotonic()
    if args.child == "baseline":
        completed = asyncio.run(guide_batch(args.base_url, args.jobs, args.concurrency))
    else:
        completed = asyncio.run(our_flow(args.base_url, args.jobs, args.concurrency, args.child))
    emit(
        "overhead-side",
        side=args.child,
        completed=completed,
        makespan_s=round(time.monotonic() - started, 2),
        peak_rss_mb=peak_rss_mb(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--child", choices=["baseline", "auto", "per-job", "batched"])
    parser.add_argument("--base-url")
    parser.add_argument("--api-url", help="use this Prefect server instead of fresh ones")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    config = {"time_scale": SCALE, "seed": 11, "exona_duration": [30, 90]}
    storage = tempfile.mkdtemp(prefix="pollers-bench-results-")
    sides = {}
    with simulator_process(config) as sim:
        common = [
            "-m",
            "benchmarks.overhead",
            "--jobs",
            str(args.jobs),
            "--concurrency",
            str(args.concurrency),
            "--base-url",
            sim.base_url("exona"),
        ]
        for side in ("baseline", "auto", "per-job"):
            # A fresh, idle server for each Prefect side: the events and logs a run
            # leaves for the server to digest must not slow the next one.
            with prefect_server(args.api_url) as api_url:
                sides[side] = run_child([*common, "--child", side], child_env(api_url, storage))
        stats = sim.stats()["exona"]
    baseline, ours, per_job = sides["baseline"], sides["auto"], sides["per-job"]
    emit(
        "overhead",
        jobs=args.jobs,
        concurrency=args.concurrency,
        completed=ours["completed"],
        makespan_s=ours["makespan_s"],
        baseline_makespan_s=baseline["makespan_s"],
        makespan_ratio=round(ours["makespan_s"] / baseline["makespan_s"], 3),
        peak_rss_mb=ours["peak_rss_mb"],
        baseline_peak_rss_mb=baseline["peak_rss_mb"],
        task_runs="per-job" if args.jobs <= PER_JOB_LIMIT else "batched",
        per_job_makespan_s=per_job["makespan_s"],
        per_job_makespan_ratio=round(per_job["makespan_s"] / baseline["makespan_s"], 3),
        per_job_peak_rss_mb=per_job["peak_rss_mb"],
        http_429=stats["http_429"],
        duplicate_submits=stats["duplicate_submits"],
    )


if __name__ == "__main__":
    main()
