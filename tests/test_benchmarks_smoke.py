"""Every benchmark at a tiny size: it runs and prints its JSON line. No timing asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from benchmarks.common import stop_process_group

# Every test starts a benchmark's process (and some a server, a worker, flow runs).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]


def bench(*args: str, api_url: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if api_url:
        args = (*args, "--api-url", api_url)
    with subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # on a timeout, its server, worker and poller go with it
    ) as process:
        try:
            # A hang, not a slow machine: durable takes 111 s here, over 240 s under load.
            stdout, stderr = process.communicate(timeout=480)
        except subprocess.TimeoutExpired:
            stop_process_group(process, timeout=10)
            raise
    assert process.returncode == 0, stderr[-3000:]
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def test_poll_efficiency_smoke():
    figures = bench("benchmarks.poll_efficiency", "--jobs", "5")
    assert figures["benchmark"] == "poll_efficiency" and figures["jobs"] == 5
    for key in (
        "calls_per_job",
        "baseline_calls_per_job",
        "calls_ratio",
        "mean_lag_s",
        "p95_lag_s",
        "baseline_mean_lag_s",
        "backoff_calls_per_job",
    ):
        assert isinstance(figures[key], (int, float))


@pytest.mark.slow
def test_callbacks_smoke():
    figures = bench("benchmarks.callbacks", "--jobs", "10", "--drop", "0.5", "--time-scale", "0.02")
    assert figures["benchmark"] == "callbacks" and figures["jobs"] == 10
    assert figures["completed"] == figures["poll_completed"] == figures["dropped_completed"] == 10
    assert figures["ed25519_completed"] == figures["ed25519_dropped_completed"] == 10
    assert figures["ed25519_calls_per_job"] >= 1.0 and figures["ed25519_jwks_fetches"] >= 1
    assert figures["ed25519_verify_us"] > 0 and figures["ed25519_mean_lag_s"] is not None
    assert figures["errors"] == 0


def test_rate_limit_smoke():
    figures = bench("benchmarks.rate_limit", "--executions", "10", "--time-scale", "0.01")
    assert figures["completed"] == 10
    for key in ("http_429", "makespan_s", "bound_s", "makespan_ratio_to_bound"):
        assert key in figures


@pytest.mark.e2e  # flow runs in a subprocess against the test server
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_overhead_smoke():
    figures = bench(
        "benchmarks.overhead", "--jobs", "6", "--concurrency", "3", api_url=PREFECT_API_URL.value()
    )
    assert figures["completed"] == 6
    for key in ("makespan_s", "baseline_makespan_s", "makespan_ratio", "peak_rss_mb"):
        assert figures[key] > 0


@pytest.mark.e2e  # flow runs in a subprocess against the test server
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_scale_smoke():
    figures = bench(
        "benchmarks.scale",
        "--jobs",
        "20",
        "--per-job-jobs",
        "4",
        "--time-scale",
        "0.02",
        api_url=PREFECT_API_URL.value(),
    )
    assert figures["completed"] == 20 and figures["per_job_completed"] == 4
    for key in ("jobs", "makespan_s", "peak_rss_mb", "cpu_cores_avg", "submits_per_s"):
        assert figures[key] > 0


@pytest.mark.e2e  # a process worker, flow runs and the poller in subprocesses
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_durable_smoke():
    figures = bench(
        "benchmarks.durable",
        *("--jobs", "2", "--time-scale", "0.02"),
        *("--worker-query-s", "1", "--scan-interval", "1", "--resume-grace", "2"),
        api_url=PREFECT_API_URL.value(),
    )
    assert figures["completed"] == figures["in_process_completed"] == 2
    assert figures["suspensions"] == 1 and figures["duplicate_submits"] == 0
    for key in ("process_seconds_ratio", "durable_lag_s", "calls_ratio"):
        assert figures[key] > 0


@pytest.mark.e2e  # flow runs in subprocesses against the test server
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_ledger_smoke():
    figures = bench(
        "benchmarks.ledger",
        *("--jobs", "10", "--copies-jobs", "6", "--time-scale", "0.02"),
        api_url=PREFECT_API_URL.value(),
    )
    assert figures["completed"] == 10 and figures["superset_completed"] == 11
    assert (figures["superset_submits"], figures["subset_submits"]) == (1, 0)
    assert figures["reordered_submits"] == 0 and figures["key_reuse_refused"] is True
    assert figures["concurrent_copies_duplicates"] == 0
    assert figures["concurrent_copies_completed"] == [6, 6]
    assert figures["ledger_rows_bytes"] > 0


@pytest.mark.e2e  # flow runs in subprocesses against the test server
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_provider_batch_smoke():
    figures = bench(
        "benchmarks.provider_batch",
        *("--jobs", "40", "--limit", "10", "--crash-jobs", "0", "--time-scale", "0.01"),
        api_url=PREFECT_API_URL.value(),
    )
    assert figures["completed"] == figures["outcomes"] == 40
    assert figures["batches_created"] == 4 and figures["rerun_batches_created"] == 0
    assert figures["rerun_outcomes"] == 40 and figures["peak_rss_mb"] > 0
