"""A flow process killed with SIGKILL mid-wait, run again, re-attaches and submits nothing twice.

The flow (``flows/batch_scans.py`` with a fixed idempotency prefix, in both of its
task-run modes) runs in a real subprocess against the session's Prefect test server,
with the simulator in this process on loopback. Both runs share one result storage
directory: the submit task's cached result (the ``JobRef``; in batched mode, the
batch's submit journal) is what the second run finds there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL

from prefect_pollers.testing.simulator import SimulatorConfig
from tests.constants import SIM_SCALE
from tests.processes import poll

# Flow runs in subprocesses, killed and run again.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]

ROOT = Path(__file__).resolve().parents[1]
COMPANIES = [
    {"company_name": f"Crash Co {i}", "company_website": f"https://crash{i}.example"}
    for i in range(6)
]
KEYS = {f"fixed:{c['company_website']}" for c in COMPANIES}

# Runs batch_scans once and prints its rows as JSON; everything else comes from the env.
FLOW_SCRIPT = """
import asyncio, json, os
from flows.batch_scans import batch_scans
from prefect_pollers import ExonaCredentials
from prefect_pollers.providers import exona_policy

companies = json.loads(os.environ["CRASH_COMPANIES"])
credentials = ExonaCredentials(api_key="sim-key", base_url=os.environ["CRASH_BASE_URL"],
                               policy_scale=float(os.environ["CRASH_SCALE"]))
state = asyncio.run(batch_scans(
    companies=companies, credentials=credentials, idempotency_prefix="fixed",
    concurrency=len(companies), max_age_days=None,
    policy=exona_policy(len(companies)).with_(deadline=3000),
    artifact_key="crash-test", task_runs=os.environ["CRASH_TASK_RUNS"], return_state=True,
))
rows = state.result()
print(json.dumps({"flow_run_id": str(state.state_details.flow_run_id),
                  "rows": [row.model_dump(mode="json") for row in rows]}))
"""


def start_flow(env: dict[str, str], out: Path) -> subprocess.Popen:
    """Start the flow in its own process (and process group), output to ``out``."""
    with out.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", FLOW_SCRIPT],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen) -> None:
    """Kill the process group we started, if it still runs."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def exona(sim) -> dict:
    return sim.state.stats()["exona"]


@pytest.mark.parametrize("task_runs", ["per-job", "batched"])
async def test_a_killed_flow_run_again_reattaches_to_its_jobs_without_resubmitting(
    sim, tmp_path, task_runs
):
    # Scans of 4-6 s (real): long enough to kill the first run while they run.
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=11, exona_duration=(400, 600))
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),  # shared by both runs
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        "CRASH_COMPANIES": json.dumps(COMPANIES),
        "CRASH_BASE_URL": sim.base_url("exona"),
        "CRASH_SCALE": str(SIM_SCALE),
        "CRASH_TASK_RUNS": task_runs,
    }
    first = start_flow(env, tmp_path / "first.log")
    try:
        # Kill it once every scan is submitted and its wait has polled (so each submit
        # task has finished and recorded its ref) but no scan has finished.
        deadline = time.monotonic() + 60
        while True:
            stats = exona(sim)
            if len(stats["status_calls_per_job"]) == len(COMPANIES):
                break
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "the first run never started waiting"
            await asyncio.sleep(0.02)
        os.killpg(first.pid, signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop(first)
    # At the kill: every job submitted once, none finished.
    assert stats["submits"] == len(COMPANIES) and stats["jobs_in_flight"] == len(COMPANIES)

    second = start_flow(env, tmp_path / "second.log")
    try:
        assert await asyncio.to_thread(second.wait, 90) == 0, (tmp_path / "second.log").read_text()
    finally:
        stop(second)
    output = (tmp_path / "second.log").read_text().strip().splitlines()[-1]
    run = json.loads(output)
    rows = run["rows"]

    stats = exona(sim)
    assert stats["submits"] == len(COMPANIES) and stats["duplicate_submits"] == 0
    assert stats["submits_per_idempotency_key"] == dict.fromkeys(KEYS, 1)
    assert stats["unobserved_terminal_jobs"] == 0 and stats["jobs_in_flight"] == 0
    assert [row["status"] for row in rows] == ["succeeded"] * len(COMPANIES)
    assert {row["scan_id"] for row in rows} == set(stats["status_calls_per_job"])

    # Per job, the second run's submit task runs found the first run's refs in the
    # ledger (no submit: the simulator's counts above); batched, its one task run did.
    # Task runs and their states reach the server as events, recorded a moment later.
    async with get_client() as client:
        runs = await poll(
            lambda: client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run["flow_run_id"]]))
            ),
            lambda found: (
                len([t for t in found if t.name.startswith("submit-exona-")])
                >= (len(COMPANIES) if task_runs == "per-job" else 0)
                and bool(found)
                and all(t.state is not None and t.state.is_final() for t in found)
            ),
            timeout=30,
        )
    submits = [t for t in runs if t.name.startswith("submit-exona-")]
    if task_runs == "per-job":
        assert len(submits) == len(COMPANIES)
        assert {t.state.name for t in submits} == {"Completed"}
    else:
        assert submits == [] and [t.state.name for t in runs] == ["Completed"]
