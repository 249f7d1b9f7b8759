"""Ledger: each job is created once, however a batch is re-run.

10,000 Exona scans in one batched flow run on the simulator, then re-runs of it
under the same idempotency prefix, each a new flow run in a new process: the same
batch and one more company (``superset_submits``: 1), half of it
(``subset_submits``: 0), all of it reversed (``reordered_submits``: 0); then two
copies of a new 2,000-company batch at once (``concurrent_copies_duplicates``: 0,
the simulator's creates beyond the first under one idempotency key;
``concurrent_copies_not_created``: keys left uncertain by a lost answer) and a
company sent again with other fields under its key (``key_reuse_refused``). Creates
are counted by the simulator. The ledger is a SQLite file
(``ledger_rows_bytes``: its size per row after a checkpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from benchmarks.common import child_env, emit, prefect_server, run_child, simulator_process

API_KEY = "sim-key"
PREFIX = "ledger-bench"


def write_csv(rows: list[int], name_suffix: str = "") -> str:
    """A companies CSV of the companies numbered ``rows``, in that order."""
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as companies:
        companies.write("company_name,company_website\n")
        companies.writelines(f"Company {i}{name_suffix},https://c{i}.test\n" for i in rows)
    return companies.name


async def our_flow(base_url: str, csv_path: str, prefix: str, scale: float) -> dict[str, object]:
    from flows.batch_scans import batch_scans
    from prefect_pollers import ExonaCredentials

    credentials = ExonaCredentials(
        api_key=API_KEY, base_url=base_url, timeout_s=120, policy_scale=scale
    )
    rows = await batch_scans(
        csv_path=csv_path,
        credentials=credentials,
        concurrency=10_000,
        max_age_days=None,
        idempotency_prefix=prefix,
        task_runs="batched",
    )
    errors = [row.error or "" for row in rows if row.status != "succeeded"]
    return {
        "rows": len(rows),
        "statuses": dict(Counter(str(row.status) for row in rows)),
        "key_reuse_errors": sum("used for another request" in error for error in errors),
        "errors": dict(Counter(error.split(" [")[0][:80] for error in errors).most_common(3)),
    }


def child(args: argparse.Namespace) -> None:
    started = time.monotonic()
    figures = asyncio.run(our_flow(args.base_url, args.csv, args.prefix, args.time_scale))
    emit("ledger-side", seconds=round(time.monotonic() - started, 1), **figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--copies-jobs", type=int, default=2_000)
    parser.add_argument("--time-scale", type=float, default=0.02)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--base-url")
    parser.add_argument("--csv")
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--api-url", help="use this Prefect server instead of a fresh one")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    n = args.jobs
    work = tempfile.mkdtemp(prefix="pollers-bench-ledger-")
    db = os.path.join(work, "ledger.db")
    config = {"time_scale": args.time_scale, "seed": 7, "exona_duration": [30, 60]}
    with simulator_process(config) as sim, prefect_server(args.api_url) as api_url:
        env = {
            **child_env(api_url, os.path.join(work, "results")),
            "PREFECT_POLLERS_LEDGER_URL": f"sqlite:///{db}",
        }

        def submits() -> int:
            return int(sim.stats()["exona"]["submits"])

        def duplicates() -> int:  # creates beyond the first under one idempotency key
            return int(sim.stats()["exona"]["duplicate_submits"])

        def run(rows: list[int], prefix: str = PREFIX, suffix: str = "") -> dict:
            return run_child(
                [
                    "-m",
                    "benchmarks.ledger",
                    "--child",
                    "--base-url",
                    sim.base_url("exona"),
                    "--csv",
                    write_csv(rows, suffix),
                    "--prefix",
                    prefix,
                    "--time-scale",
                    str(args.time_scale),
                ],
                env,
            )

        first = run(list(range(n)))
        created = submits()
        submits_per_s = sim.stats()["exona"]["submits_per_s"] or 0.0
        superset = run(list(range(n + 1)))
        superset_submits, created = submits() - created, submits()
        run(list(range(n // 2)))
        subset_submits, created = submits() - created, submits()
        run(list(reversed(range(n + 1))))
        reordered_submits, created = submits() - created, submits()
        copies = list(range(n + 1, n + 1 + args.copies_jobs))
        duplicates_before = duplicates()
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda _: run(copies, prefix=f"{PREFIX}-copies"), range(2)))
        copies_created, created = submits() - created, submits()
        copies_duplicates = duplicates() - duplicates_before
        reuse = run([0], suffix=" renamed")
        reuse_submits = submits() - created
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = connection.execute("SELECT count(*) FROM pollers_submits").fetchone()[0]
    emit(
        "ledger",
        jobs=n,
        completed=first["statuses"].get("succeeded", 0),
        first_run_s=first["seconds"],
        superset_submits=superset_submits,
        superset_completed=superset["statuses"].get("succeeded", 0),
        subset_submits=subset_submits,
        reordered_submits=reordered_submits,
        concurrent_copies_duplicates=copies_duplicates,
        # Keys neither copy created: a submit that may have created its job (its answer lost).
        concurrent_copies_not_created=len(copies) - (copies_created - copies_duplicates),
        concurrent_copies_completed=[side["statuses"].get("succeeded", 0) for side in both],
        not_completed_errors=[first["errors"], *(side["errors"] for side in both)],
        key_reuse_refused=reuse["key_reuse_errors"] == 1 and reuse_submits == 0,
        submits_per_s=round(submits_per_s, 1),
        ledger_rows=rows,
        ledger_rows_bytes=round(os.path.getsize(db) / max(rows, 1), 1),
    )
    subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    sys.exit(main())
