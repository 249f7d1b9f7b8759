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
``server_rows`` and ``events`` are what the batch left in the server's database
(``event_rows_per_job``: its ``event_resources`` rows per job).

``bound_s`` is the cap held full for the whole run: jobs / cap x the mean scan time.
Where the rest of the makespan goes, from the simulator's record of every job
(created, ended): ``startup_s`` (the parent's start to the first submit),
``active_s`` (first submit to last end), ``teardown_s`` (last end to the parent's
end); ``occupancy_mean`` (jobs in flight / cap over ``active_s``, from the jobs'
spans) and ``occupancy_by_tenth`` (over each tenth of it); ``mean_poll_lag_s`` (a
job's end to the poll that saw it: a slot held, the provider idle),
``occupancy_with_lag`` (the jobs' spans and lags / cap: the cap as its holders see
it) and ``bound_with_lag_s`` (the cap held full, each slot for a scan and its lag:
the best the poll schedule allows); per shard, the time from
its last submit to its last end (``shard_tail_s``), and its first submit and last end
after the first submit of all (``shard_start_s``, ``shard_end_s``). ``cpu_s`` is the
CPU time of each kind of process (sampled every 2 s: the server, PostgreSQL, the
simulator, the workers, the shard runs, the parent), ``machine_busy_cores`` the mean
busy cores of the whole machine (other work included) over the run, next to its
``cores``. JOBS, CAP and POLL in the environment set ``--jobs``, ``--cap`` and
``--poll`` (``make bench BENCH=scale_out JOBS=4000 CAP=200``); the cap defaults to a
twentieth of the jobs, at most 2,000; ``--poll interactive`` polls on the Exona guide's
schedule for one scan (every 5 s) instead of a batch's (every 30 s), whose lag holds
each slot a third longer than its scan.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from statistics import mean

import httpx

from benchmarks.common import (
    child_env,
    emit,
    prefect_server,
    run_child,
    simulator_process,
    stop_process_group,
)
from deployments.postgres import local_postgres
from prefect_pollers.batch.shards import split

REPO = Path(__file__).resolve().parents[1]
PREFECT = [os.path.join(os.path.dirname(sys.executable), "prefect")]
BLOCK = "exona-scale-out"
WORKER_STOP_TIMEOUT_S = 30  # then SIGKILL: a worker once took longer and the run printed nothing
EXONA_DURATION_S = (30, 60)
MAX_DEFAULT_CAP = 2_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


async def parent_flow(
    base_url: str, jobs: int, shards: int, cap: int, scale: float, poll: str
) -> dict[str, object]:
    """Save the capped block, run the sharded parent; returns its rows' outcomes."""
    from flows.batch_scans import batch_scans
    from prefect_pollers import ExonaCredentials
    from prefect_pollers.batch.shards import Sharding
    from prefect_pollers.limits.shared import SharedLimits
    from prefect_pollers.providers import exona_policy

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
            # The guide's schedule for one scan (a poll every 5 s) or, by default, for
            # a batch of 100 or more (every 30 s).
            policy=exona_policy(1) if poll == "interactive" else None,
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
    started, started_at = time.monotonic(), time.time()
    outcomes = asyncio.run(
        parent_flow(args.base_url, args.jobs, args.shards, args.cap, args.time_scale, args.poll)
    )
    emit(
        "scale-out-parent",
        makespan_s=round(time.monotonic() - started, 1),
        started_at=started_at,
        ended_at=time.time(),
        **outcomes,
    )


class ProcessSampler:
    """Samples, every 2 s until stopped, the processes under this one and the machine.

    Each process under this benchmark counts under the kind of its ancestor that this
    process started (``server``, ``postgres``, ``simulator``, a worker, ``parent``),
    except the shard runs (``prefect.engine`` under a worker): ``shards``. Keeps each
    worker's largest shard process (VmHWM), every process's last CPU time, and the
    machine's busy and total CPU ticks.
    """

    def __init__(self, workers: dict[str, subprocess.Popen[bytes]]) -> None:
        self.workers = {worker.pid: name for name, worker in workers.items()}
        self.peak_mb: dict[str, float] = dict.fromkeys(workers, 0.0)
        self.ran: dict[str, set[int]] = {name: set() for name in workers}
        self._cpu: dict[int, tuple[str, float]] = {}
        self._machine_start = _machine_ticks()
        self._machine_end = self._machine_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (and take a last sample)."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds per kind of process."""
        total: Counter[str] = Counter()
        for kind, seconds in self._cpu.values():
            total[kind] += seconds
        return {kind: round(seconds, 1) for kind, seconds in sorted(total.items())}

    def machine_busy_cores(self) -> float:
        """Mean busy cores of the whole machine while sampling."""
        (busy0, all0), (busy1, all1) = self._machine_start, self._machine_end
        return round((busy1 - busy0) / max(1, all1 - all0) * (os.cpu_count() or 1), 2)

    def _sample(self) -> None:
        while True:
            stopping = self._stop.wait(2.0)
            self._machine_end = _machine_ticks()
            parents: dict[int, int] = {}
            stats: dict[int, list[str]] = {}
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    pid = int(stat.parent.name)
                    parents[pid], stats[pid] = int(fields[1]), fields
            for pid, fields in stats.items():
                kind = self._kind(pid, parents)
                if kind is None:
                    continue
                # utime and stime: fields 14 and 15 of /proc/<pid>/stat (here 11 and 12).
                self._cpu[pid] = (kind, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
            if stopping:
                return

    def _kind(self, pid: int, parents: dict[int, int]) -> str | None:
        """The kind of ``pid``, or None if it is not under this process."""
        chain = [pid]
        while chain[-1] in parents and parents[chain[-1]] != os.getpid():
            chain.append(parents[chain[-1]])
            if chain[-1] <= 1:
                return None
        top = chain[-1]
        if top not in parents:
            return None
        try:
            command = Path(f"/proc/{top}/cmdline").read_bytes()
        except OSError:
            return None
        if top in self.workers:
            return self._worker_child(pid, self.workers[top]) if pid != top else "workers"
        for marker, kind in (
            (b"postgres", "postgres"),
            (b"server\x00start", "server"),
            (b"simulator", "simulator"),
            (b"--child", "parent"),
        ):
            if marker in command:
                return kind
        return "other"

    def _worker_child(self, pid: int, worker: str) -> str:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return "workers"
        if b"prefect.engine" not in command:
            return "workers"
        self.ran[worker].add(pid)
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        if match:
            self.peak_mb[worker] = max(self.peak_mb[worker], round(int(match.group(1)) / 1024, 1))
        return "shards"


def _machine_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU ticks so far (``/proc/stat``)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def timeline(
    jobs: dict[str, dict[str, object]], total: int, shards: int, cap: int, parent: dict[str, float]
) -> dict[str, object]:
    """Where the makespan went, from the simulator's jobs (see the module)."""
    spans: list[tuple[float, float]] = []
    lags: list[float] = []
    per_shard: dict[int, list[tuple[float, float]]] = {}
    ranges = split(total, shards)
    for job in jobs.values():
        created, ended = float(job["created_at"]), float(job["ended_at"] or time.time())
        spans.append((created, ended))
        if job["observed_at"] is not None:
            lags.append(float(job["observed_at"]) - ended)
        index = int(str(job["data"]["company_name"]).rsplit(" ", 1)[1])
        shard = next(r.index for r in ranges if r.start <= index < r.stop)
        per_shard.setdefault(shard, []).append((created, ended))
    first = min(created for created, _ in spans)
    last = max(ended for _, ended in spans)
    active = max(1e-9, last - first)
    tenths = [0.0] * 10
    for created, ended in spans:
        for tenth in range(10):
            low, high = first + active * tenth / 10, first + active * (tenth + 1) / 10
            tenths[tenth] += max(0.0, min(ended, high) - max(created, low))
    return {
        "startup_s": round(first - parent["started_at"], 1),
        "active_s": round(active, 1),
        "teardown_s": round(parent["ended_at"] - last, 1),
        "mean_scan_s": round(mean(ended - created for created, ended in spans), 2),
        "mean_poll_lag_s": round(mean(lags), 2) if lags else None,
        # The cap held full, each slot for a scan and its poll lag: the best this
        # poll schedule allows.
        "bound_with_lag_s": round(
            total / cap * (mean(e - c for c, e in spans) + (mean(lags) if lags else 0.0)), 1
        ),
        "occupancy_mean": round(sum(e - c for c, e in spans) / (cap * active), 3),
        "occupancy_with_lag": round((sum(e - c for c, e in spans) + sum(lags)) / (cap * active), 3),
        "occupancy_by_tenth": [round(busy / (cap * active / 10), 2) for busy in tenths],
        "shard_tail_s": [
            round(max(e for _, e in s) - max(c for c, _ in s), 1)
            for _, s in sorted(per_shard.items())
        ],
        "shard_start_s": [
            round(min(c for c, _ in s) - first, 1) for _, s in sorted(per_shard.items())
        ],
        "shard_end_s": [
            round(max(e for _, e in s) - first, 1) for _, s in sorted(per_shard.items())
        ],
    }


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
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS") or 40_000))
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cap", type=int, default=int(os.environ.get("CAP") or 0) or None)
    parser.add_argument("--time-scale", type=float, default=0.5)
    parser.add_argument(
        "--poll",
        choices=["batch", "interactive"],
        default=os.environ.get("POLL") or "batch",
        help="the Exona guide's poll schedule: for a batch (30 s) or one scan (5 s)",
    )
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--base-url")
    args = parser.parse_args()
    args.cap = args.cap or max(1, min(MAX_DEFAULT_CAP, args.jobs // 20))
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
        sampler = ProcessSampler(workers)
        try:
            parent = run_child(
                [
                    *("-m", "benchmarks.scale_out", "--child", "--jobs", str(args.jobs)),
                    *("--shards", str(args.shards), "--cap", str(args.cap)),
                    *("--time-scale", str(args.time_scale), "--base-url", sim.base_url("exona")),
                    *("--poll", args.poll),
                ],
                env,
            )
            sampler.stop()
            stats = sim.stats()["exona"]
            rows = database_rows(database_url)
            jobs = httpx.get(f"{sim.url}/_sim/jobs/exona?data=1", timeout=120).json()["jobs"]
            mean_scan_s = mean(EXONA_DURATION_S) * args.time_scale
            bound_s = args.jobs / args.cap * mean_scan_s
            # The line first: what follows is teardown, which must not cost the figures.
            emit(
                "scale_out",
                jobs=args.jobs,
                completed=parent["completed"],
                error_rows=parent["error_rows"],
                errors=parent["errors"],
                shards=args.shards,
                workers=args.workers,
                workers_used=sum(bool(pids) for pids in sampler.ran.values()),
                cap=args.cap,
                max_in_flight=stats["max_jobs_in_flight"],
                duplicate_submits=stats["duplicate_submits"],
                submits=stats["submits"],
                http_429=stats["http_429"],
                makespan_s=parent["makespan_s"],
                bound_s=round(bound_s, 1),
                makespan_ratio_to_bound=round(parent["makespan_s"] / bound_s, 2),
                **timeline(jobs, args.jobs, args.shards, args.cap, parent),
                cpu_s=sampler.cpu_s(),
                machine_busy_cores=sampler.machine_busy_cores(),
                cores=os.cpu_count(),
                peak_rss_mb=sampler.peak_mb,
                time_scale=args.time_scale,
                poll=args.poll,
                events=rows.get("events", 0),
                event_rows_per_job=round(rows.get("event_resources", 0) / args.jobs, 2),
                server_rows=rows,
            )
        finally:
            sampler.stop()
            # A worker that does not stop within the timeout is killed with its group
            # (its flow-run processes): teardown never raises, never hangs.
            for worker in workers.values():
                stop_process_group(worker, timeout=WORKER_STOP_TIMEOUT_S)


if __name__ == "__main__":
    main()
