"""Scale-out: 40,000 Exona scans in 4 shards on 2 process workers, a shared cap of 2,000 in flight.

A Prefect server on a throwaway PostgreSQL (``deployments.postgres``), the
deployments of ``deployments/prefect.yaml``, two process workers on the
``shards`` queue (two shard runs each at once) and, in this benchmark's child
process, the parent ``batch_scans`` flow with ``Sharding(shards=4)``: it starts
four runs of ``batch-scans/shard`` and waits for them. The credentials block caps
the jobs in flight at 2,000 across the four shard processes (a Prefect global
concurrency limit, leased in chunks). Scans take 30-60 s at the time scale
(``--time-scale``, 0.5 by default: 15-30 s). ``max_in_flight`` is counted by the
simulator; ``peak_rss_mb`` is each worker's largest shard process (VmHWM);
``server_rows`` and ``events`` are what the batch left in the server's database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import (
    child_env,
    emit,
    prefect_server,
    run_child,
    simulator_process,
    stop_process_group,
)
from deployments.postgres import local_postgres

REPO = Path(__file__).resolve().parents[1]
PREFECT = [os.path.join(os.path.dirname(sys.executable), "prefect")]
BLOCK = "exona-scale-out"
WORKER_STOP_TIMEOUT_S = 30  # then SIGKILL: a worker once took longer and the run printed nothing


async def parent_flow(
    base_url: str, jobs: int, shards: int, cap: int, scale: float
) -> dict[str, object]:
    """Save the capped block, run the sharded parent; returns its rows' outcomes."""
    from flows.batch_scans import batch_scans
    from prefect_pollers import ExonaCredentials
    from prefect_pollers.batch.shards import Sharding
    from prefect_pollers.limits.shared import SharedLimits

    await ExonaCredentials(
        api_key="sim-key",
        base_url=base_url,
        timeout_s=120,
        policy_scale=scale,
        shared_limits=SharedLimits(jobs_in_flight=cap),
    ).save(BLOCK, overwrite=True)
    csv_path = REPO / ".bench-scale-out.csv"  # the shards read it from the repository root
    csv_path.write_text(
        "company_name,company_website\n"
        + "".join(f"Company {i},https://c{i}.test\n" for i in range(jobs)),
        encoding="utf-8",
    )
    try:
        rows = await batch_scans(
            csv_path=str(csv_path.name),
            credentials=BLOCK,
            concurrency=jobs,
            max_age_days=None,
            idempotency_prefix=f"scale-out-{time.time_ns()}",
            sharding=Sharding(
                deployment="batch-scans/shard", shards=shards, threshold=1, poll_interval_s=2
            ),
        )
    finally:
        csv_path.unlink()
    errors = [row.error or "" for row in rows if row.status != "succeeded"]
    return {
        "completed": sum(row.status == "succeeded" for row in rows),
        "error_rows": len(errors),
        # The three most common errors, by their first words (a dropped connection's
        # "may have created" shows here).
        "errors": dict(Counter(error.split(" [")[0][:80] for error in errors).most_common(3)),
    }


def child(args: argparse.Namespace) -> None:
    """Run the parent flow in this process (from the repository root) and print its figures."""
    os.chdir(REPO)
    started = time.monotonic()
    outcomes = asyncio.run(
        parent_flow(args.base_url, args.jobs, args.shards, args.cap, args.time_scale)
    )
    emit("scale-out-parent", makespan_s=round(time.monotonic() - started, 1), **outcomes)


class ShardMemory:
    """Samples the VmHWM of every worker's flow-run processes until stopped."""

    def __init__(self, workers: dict[str, subprocess.Popen[bytes]]) -> None:
        self.workers = workers
        self.peak_mb: dict[str, float] = dict.fromkeys(workers, 0.0)
        self.ran: dict[str, set[int]] = {name: set() for name in workers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        from tests.processes import descendants

        while not self._stop.wait(1.0):
            for name, worker in self.workers.items():
                for pid in descendants(worker.pid):
                    try:
                        command = Path(f"/proc/{pid}/cmdline").read_bytes()
                        status = Path(f"/proc/{pid}/status").read_text()
                    except OSError:
                        continue
                    if b"prefect.engine" not in command:
                        continue
                    self.ran[name].add(pid)
                    match = re.search(r"VmHWM:\s+(\d+) kB", status)
                    if match:
                        peak = round(int(match.group(1)) / 1024, 1)
                        self.peak_mb[name] = max(self.peak_mb[name], peak)


def database_rows(database_url: str) -> dict[str, int]:
    """Live rows per table of the server's database (largest first, 8 tables)."""
    match = re.match(r"postgresql\+asyncpg://(\w+)@([\d.]+):(\d+)/(\w+)", database_url)
    assert match, database_url
    user, host, port, name = match.groups()
    query = "select relname, n_live_tup from pg_stat_user_tables order by n_live_tup desc limit 8"
    done = subprocess.run(
        ["psql", "-h", host, "-p", port, "-U", user, "-d", name, "-At", "-F", "=", "-c", query],
        capture_output=True,
        text=True,
        check=True,
    )
    return {k: int(v) for k, v in (line.split("=") for line in done.stdout.split())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cap", type=int, default=2_000)
    parser.add_argument("--time-scale", type=float, default=0.5)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--base-url")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    config = {"time_scale": args.time_scale, "seed": 5, "exona_duration": [30, 60]}
    storage = tempfile.mkdtemp(prefix="pollers-bench-results-")
    with (
        simulator_process(config) as sim,
        local_postgres(durable=False) as database_url,
        prefect_server(database_url=database_url) as api_url,
    ):
        env = {**child_env(api_url, storage), "PREFECT_WORKER_QUERY_SECONDS": "2"}
        for command in (
            ["work-pool", "create", "pollers-process", "--type", "process", "--overwrite"],
            ["--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
        ):
            subprocess.run([*PREFECT, *command], env=env, cwd=REPO, check=True, capture_output=True)
        workers = {
            f"worker-{index}": subprocess.Popen(
                [
                    *(*PREFECT, "worker", "start", "--pool", "pollers-process"),
                    *("--type", "process", "-q", "shards", "--name", f"worker-{index}"),
                    *("--limit", str(-(-args.shards // args.workers))),
                ],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for index in range(args.workers)
        }
        memory = ShardMemory(workers)
        try:
            parent = run_child(
                [
                    *("-m", "benchmarks.scale_out", "--child", "--jobs", str(args.jobs)),
                    *("--shards", str(args.shards), "--cap", str(args.cap)),
                    *("--time-scale", str(args.time_scale), "--base-url", sim.base_url("exona")),
                ],
                env,
            )
            memory.stop()
            stats = sim.stats()["exona"]
            rows = database_rows(database_url)
            # The line first: what follows is teardown, which must not cost the figures.
            emit(
                "scale_out",
                jobs=args.jobs,
                completed=parent["completed"],
                error_rows=parent["error_rows"],
                errors=parent["errors"],
                shards=args.shards,
                workers=args.workers,
                workers_used=sum(bool(pids) for pids in memory.ran.values()),
                cap=args.cap,
                max_in_flight=stats["max_jobs_in_flight"],
                duplicate_submits=stats["duplicate_submits"],
                submits=stats["submits"],
                http_429=stats["http_429"],
                makespan_s=parent["makespan_s"],
                peak_rss_mb=memory.peak_mb,
                time_scale=args.time_scale,
                events=rows.get("events", 0),
                server_rows=rows,
            )
        finally:
            memory.stop()
            # A worker that does not stop within the timeout is killed with its group
            # (its flow-run processes): teardown never raises, never hangs.
            for worker in workers.values():
                stop_process_group(worker, timeout=WORKER_STOP_TIMEOUT_S)


if __name__ == "__main__":
    main()
