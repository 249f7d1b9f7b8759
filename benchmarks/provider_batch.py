"""Provider batch: 100,000 requests, each one outcome, each batch created once, in little memory.

100,000 OpenAI Batch requests on the simulator, the per-batch limit lowered to 25,000
(so 4 provider batches), results of about 2 KB each (~200 MB of results), run by
``run_provider_batch`` in a flow in its own process (its peak RSS is ``peak_rss_mb``):
``completed`` and ``outcomes`` (every item's, read back from the outcome files) equal
the requests, ``batches_created`` 4. Then the same flow again (``rerun_batches_created``:
0, read from the simulator), and a new batch whose process is killed between its upload
and its create, run again: ``crash_rerun_batches`` 1 and ``crash_rerun_uploads`` 1 (the
upload reused). ``results_mb_per_s`` is the results streamed into outcome files per
second of reading; ``status_calls_per_batch`` the polls of the busiest batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import httpx

from benchmarks.common import (
    child_env,
    emit,
    peak_rss_mb,
    prefect_server,
    run_child,
    simulator_process,
    stop_process_group,
)

API_KEY = "sim-key"
PROVIDER = "openai-batch"


async def our_flow(base_url: str, jobs: int, prefix: str, limit: int, scale: float) -> dict:
    from prefect import flow

    from prefect_pollers import BatchItem, OpenAIBatchCredentials, run_provider_batch

    credentials = OpenAIBatchCredentials(
        api_key=API_KEY,
        base_url=base_url,
        max_requests_per_batch=limit,
        policy_scale=scale,
        timeout_s=300,
    )

    @flow(name="provider-batch-bench")
    async def bench() -> dict:
        items = [
            BatchItem(
                label=str(i),
                key=f"{prefix}-{i}",
                request={
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"ticket {i}: please classify"}],
                },
            )
            for i in range(jobs)
        ]
        outcomes = await run_provider_batch(credentials, items, title="bench")
        del items
        seen: Counter[str] = Counter()
        for outcome in outcomes.read():  # read back one at a time from the files
            seen[outcome.outcome.value] += 1
        reads = [b for b in outcomes.batches if b.get("read_s") is not None]
        window = (
            max(b["read_started_at"] + b["read_s"] for b in reads)
            - min(b["read_started_at"] for b in reads)
            if reads
            else 0.0
        )
        return {"counts": outcomes.counts, "outcomes": sum(seen.values()), "read_s": window}

    return await bench()


def child(args: argparse.Namespace) -> None:
    started = time.monotonic()
    figures = asyncio.run(
        our_flow(args.base_url, args.jobs, args.prefix, args.limit, args.time_scale)
    )
    emit(
        "provider-batch-side",
        seconds=round(time.monotonic() - started, 1),
        peak_rss_mb=peak_rss_mb(),
        **figures,
    )


def crash_between_upload_and_create(sim, env: dict[str, str], args: list[str]) -> dict:
    """Kill a run whose create hangs after its upload; run it again; its figures."""

    def uploaded() -> int:
        return sim.stats()[PROVIDER]["files_uploaded"]

    before = uploaded()
    patch = {"faults": [{"provider": PROVIDER, "route": "submit", "kind": "slow",
                         "rate": 1.0, "delay_s": 36000}]}  # fmt: skip
    httpx.patch(f"{sim.url}/_sim/config", json=patch, timeout=10).raise_for_status()
    crashing = subprocess.Popen(
        [sys.executable, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while uploaded() == before:
        if time.monotonic() > deadline or crashing.poll() is not None:
            raise RuntimeError("the crashing run never uploaded its input")
        time.sleep(0.5)
    time.sleep(2.0)  # its create is sent (and hangs) just after the upload
    stop_process_group(crashing, timeout=5, sig=signal.SIGKILL)
    httpx.patch(f"{sim.url}/_sim/config", json={"faults": []}, timeout=10).raise_for_status()
    return run_child(args, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=25_000)
    parser.add_argument("--crash-jobs", type=int, default=5_000, help="0: no crash re-run")
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--base-url")
    parser.add_argument("--prefix", default="pb")
    parser.add_argument("--api-url", help="use this Prefect server instead of a fresh one")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = tempfile.mkdtemp(prefix="pollers-bench-provider-batch-")
    config = {
        "time_scale": args.time_scale,
        "seed": 11,
        "batch_duration": [600, 900],
        "batch_result_bytes": 2000,
    }
    with simulator_process(config) as sim, prefect_server(args.api_url) as api_url:
        env = {
            **child_env(api_url, os.path.join(work, "results")),
            "PREFECT_POLLERS_LEDGER_URL": f"sqlite:///{os.path.join(work, 'ledger.db')}",
        }
        base_url = sim.base_url(PROVIDER)

        def stats() -> dict:
            return sim.stats()[PROVIDER]

        def command(prefix: str, jobs: int) -> list[str]:
            return [
                "-m",
                "benchmarks.provider_batch",
                "--child",
                "--base-url",
                base_url,
                "--jobs",
                str(jobs),
                "--prefix",
                prefix,
                "--limit",
                str(args.limit),
                "--time-scale",
                str(args.time_scale),
            ]

        first = run_child(command("pb", args.jobs), env)
        created = stats()["batches_created"]
        served = stats()["results_bytes_served"]
        status_calls = stats()["status_calls_max"]
        again = run_child(command("pb", args.jobs), env)
        rerun_created = stats()["batches_created"] - created

        before = after = stats()
        crash_rerun: dict = {"counts": {}}
        if args.crash_jobs:
            crash_rerun = crash_between_upload_and_create(
                sim, env, command("crash", args.crash_jobs)
            )
            after = stats()
    emit(
        "provider_batch",
        requests=args.jobs,
        per_batch_limit=args.limit,
        completed=first["counts"].get("succeeded", 0),
        outcomes=first["outcomes"],
        batches_created=created,
        rerun_batches_created=rerun_created,
        rerun_outcomes=again["outcomes"],
        crash_rerun_batches=after["batches_created"] - before["batches_created"],
        crash_rerun_uploads=after["files_uploaded"] - before["files_uploaded"],
        crash_rerun_completed=crash_rerun["counts"].get("succeeded", 0),
        peak_rss_mb=first["peak_rss_mb"],
        results_mb=round(served / 1e6, 1),
        results_mb_per_s=round(served / 1e6 / max(first["read_s"], 1e-9), 1),
        status_calls_per_batch=status_calls,
        first_run_s=first["seconds"],
    )
    subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    sys.exit(main())
