"""Scale: 10,000 jobs in flight at once in one flow run.

Simulator jobs of 30-60 s (real time), polled no faster than every 5 s (Exona's
Retry-After is 10 s; the batch preset polls every 30 s after a first look at 30 s).
The batch runs in batched mode: one task run multiplexes every submit and wait on
one event loop, with per-job visibility through job events and the table
artifact. For comparison, per-job task runs (two per job) are measured on a
smaller batch (``--per-job-jobs``), in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from benchmarks.common import (
    child_env,
    cpu_seconds,
    emit,
    peak_rss_mb,
    prefect_server,
    run_child,
    simulator_process,
)

API_KEY = "sim-key"


async def our_flow(base_url: str, count: int, mode: str, scale: float) -> int:
    """Scan ``count`` companies all at once: returns the completed scans."""
    from flows.batch_scans import batch_scans
    from prefect_pollers import ExonaCredentials

    credentials = ExonaCredentials(
        api_key=API_KEY, base_url=base_url, timeout_s=120, policy_scale=scale
    )
    # As a user would for so many: a CSV file (flow run parameters are size-limited).
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as companies:
        companies.write("company_name,company_website\n")
        companies.writelines(f"Company {i},https://c{i}.test\n" for i in range(count))
    rows = await batch_scans(
        csv_path=companies.name,
        credentials=credentials,
        concurrency=count,
        max_age_days=None,
        task_runs=mode,
    )
    return sum(row.status == "succeeded" for row in rows)


def child(args: argparse.Namespace) -> None:
    """Run the flow in this process and print its figures."""
    started, cpu = time.monotonic(), cpu_seconds()
    completed = asyncio.run(our_flow(args.base_url, args.jobs, args.child, args.time_scale))
    makespan = time.monotonic() - started
    emit(
        "scale-side",
        mode=args.child,
        jobs=args.jobs,
        completed=completed,
        makespan_s=round(makespan, 1),
        peak_rss_mb=peak_rss_mb(),
        cpu_cores_avg=round((cpu_seconds() - cpu) / makespan, 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--per-job-jobs", type=int, default=1_000)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--child", choices=["per-job", "batched"])
    parser.add_argument("--base-url")
    parser.add_argument("--api-url", help="use this Prefect server instead of fresh ones")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    config = {"time_scale": args.time_scale, "seed": 5, "exona_duration": [30, 60]}
    storage = tempfile.mkdtemp(prefix="pollers-bench-results-")
    sides, batched_stats = {}, {}
    with simulator_process(config) as sim:
        for mode, jobs in (("batched", args.jobs), ("per-job", args.per_job_jobs)):
            with prefect_server(args.api_url) as api_url:
                sides[mode] = run_child(
                    [
                        "-m",
                        "benchmarks.scale",
                        "--jobs",
                        str(jobs),
                        "--child",
                        mode,
                        "--base-url",
                        sim.base_url("exona"),
                        "--time-scale",
                        str(args.time_scale),
                    ],
                    child_env(api_url, storage),
                )
            if mode == "batched":  # the submit rate of the batched run alone
                batched_stats = sim.stats()["exona"]
        stats = sim.stats()["exona"]
    batched, per_job = sides["batched"], sides["per-job"]
    emit(
        "scale",
        jobs=batched["jobs"],
        completed=batched["completed"],
        makespan_s=batched["makespan_s"],
        peak_rss_mb=batched["peak_rss_mb"],
        cpu_cores_avg=batched["cpu_cores_avg"],
        max_jobs_in_flight=stats["max_jobs_in_flight"],
        submits_per_s=round(batched_stats["submits_per_s"] or 0.0, 1),
        http_429=stats["http_429"],
        per_job_jobs=per_job["jobs"],
        per_job_completed=per_job["completed"],
        per_job_makespan_s=per_job["makespan_s"],
        per_job_peak_rss_mb=per_job["peak_rss_mb"],
        per_job_cpu_cores_avg=per_job["cpu_cores_avg"],
    )


if __name__ == "__main__":
    main()
