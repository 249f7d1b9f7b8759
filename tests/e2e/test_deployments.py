"""End to end: the deployments of ``deployments/prefect.yaml`` on a real Prefect server.

On the package's stack (``conftest.py``: a server, the simulator, the blocks, the pool,
every deployment and a process worker): the batch-scans deployment run on the worker,
the scheduler's runs for the nightly schedule and a 10 s interval schedule (a copy of
batch-scans in a work queue the worker does not poll), cancellation, callbacks across
processes, and a killed worker's run found, re-run and re-attached.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import sys
import time
from itertools import pairwise
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventRelatedFilter,
    EventResourceFilter,
)

from prefect_pollers.ops.recovery import CRASHED_RUNS, SILENT_RUNS
from prefect_pollers.testing.registry import provider_entry
from prefect_pollers.testing.simulator import SimulatorConfig
from tests.e2e.conftest import (
    FREQUENT,
    NIGHTLY,
    TERMINAL,
    TIME_SCALE,
    Stack,
    save_never_ending_generic_block,
    until_healthy,
)
from tests.processes import (
    Process,
    api_client,
    free_port,
    poll,
)

# A real `prefect server start`, a process worker, deployment runs: about a minute.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("e2e-stack")]

HEARTBEAT_S = 30  # the deployments' PREFECT_FLOWS_HEARTBEAT_FREQUENCY (prefect.yaml)
SILENCE_S = 40


async def test_batch_scans_deployment_runs_on_a_process_worker(stack: Stack) -> None:
    assert stack.worker is not None
    output = stack.cli("deployment", "run", f"batch-scans/{NIGHTLY}")
    match = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert match, output
    flow_run_id = UUID(match.group(1))

    async with api_client(stack.api_url) as client:
        flow_run = await poll(
            lambda: client.read_flow_run(flow_run_id),
            lambda run: run.state_type in TERMINAL,
            timeout=120,
        )
        assert flow_run.state_type == StateType.COMPLETED, (
            f"{flow_run.state}\n{stack.worker.tail()}"
        )

        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        by_type = {artifact.type: artifact for artifact in artifacts}
        assert by_type["progress"].data == 100.0
        table = by_type["table"]
        assert table.key == "exona-batch-scans"
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert len(rows) == 20
        status = {row["company"]: row["status"] for row in rows}
        assert status.pop("Ghost Holdings") == "failed"
        assert set(status.values()) == {"succeeded"}
        scan_ids = {row["scan_id"] for row in rows}
        ghost = next(row["scan_id"] for row in rows if row["company"] == "Ghost Holdings")

        # Task runs reach the server as events, recorded a moment later: poll for them.
        waits = {f"wait-exona-{scan_id}" for scan_id in scan_ids}
        task_runs = await poll(
            lambda: client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            ),
            lambda found: waits <= {t.name for t in found},
            timeout=30,
        )
        assert waits <= {t.name for t in task_runs}

        terminal_events = EventFilter(
            event=EventNameFilter(
                name=["prefect-pollers.job.succeeded", "prefect-pollers.job.failed"]
            ),
            resource=EventResourceFilter(id_prefix=["prefect-pollers.job.exona."]),
            related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        )
        page = await poll(
            lambda: client.read_events(filter=terminal_events, limit=50),
            lambda page: len(page.events) >= 20,
            timeout=30,
        )
    assert {event.resource.id: event.event for event in page.events} == {
        f"prefect-pollers.job.exona.{scan_id}": "prefect-pollers.job."
        + ("failed" if scan_id == ghost else "succeeded")
        for scan_id in scan_ids
    }
    exona = stack.simulator_stats()["exona"]
    assert exona["submits"] >= 20 and exona["duplicate_submits"] == 0


async def test_the_scheduler_creates_runs_for_the_schedules(stack: Stack) -> None:
    async with api_client(stack.api_url) as client:
        nightly = await client.read_deployment_by_name(f"batch-scans/{NIGHTLY}")
        frequent = await client.read_deployment_by_name(f"batch-scans/{FREQUENT}")

        async def scheduled_runs(deployment_id: UUID) -> list[FlowRun]:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
            )

        frequent_runs = await poll(
            lambda: scheduled_runs(frequent.id), lambda runs: len(runs) >= 3, timeout=60
        )
        nightly_runs = await poll(
            lambda: scheduled_runs(nightly.id), lambda runs: len(runs) >= 1, timeout=60
        )

    assert len(frequent_runs) >= 3 and all(run.auto_scheduled for run in frequent_runs)
    starts = sorted(run.expected_start_time for run in frequent_runs)
    assert {(later - earlier).total_seconds() for earlier, later in pairwise(starts)} == {10}

    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly_runs and all(run.auto_scheduled for run in nightly_runs)
    assert {
        (run.expected_start_time.hour, run.expected_start_time.minute) for run in nightly_runs
    } == {(2, 0)}


async def test_cancelling_a_run_cancels_its_remote_jobs(stack: Stack) -> None:
    """``prefect flow-run cancel``: the worker stops the run and the flow's
    ``on_cancellation`` hook cancels the generic API's jobs (found through the run's
    events, with the saved ``generic`` block)."""
    state = stack.simulator_state
    state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11, never_finish_rate=1.0)
    try:
        api = await save_never_ending_generic_block(stack)
        output = stack.cli(
            "deployment",
            "run",
            "generic-jobs/render-every-6-hours",
            "--params",
            json.dumps({"api": api}),
        )
        match = re.search(r"UUID: ([0-9a-f-]{36})", output)
        assert match, output
        flow_run_id = UUID(match.group(1))
        before = stack.simulator_stats()["generic"]

        async def generic_stats() -> dict[str, Any]:
            return stack.simulator_stats()["generic"]

        waiting = await poll(
            generic_stats,
            lambda s: (
                s["submits"] >= before["submits"] + 3
                and s["status_calls"] >= before["status_calls"] + 3
            ),
            timeout=90,
        )
        assert waiting["submits"] >= before["submits"] + 3, stack.worker.tail()
        stack.cli("flow-run", "cancel", str(flow_run_id))
        async with api_client(stack.api_url) as client:
            flow_run = await poll(
                lambda: client.read_flow_run(flow_run_id),
                lambda run: run.state_type in TERMINAL,
                timeout=90,
            )
        assert flow_run.state_type == StateType.CANCELLED, f"{flow_run.state}"
        after = await poll(
            generic_stats, lambda s: s["cancels"] >= before["cancels"] + 3, timeout=60
        )
        assert after["cancels"] - before["cancels"] == 3, stack.worker.tail()
    finally:
        state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11)


async def test_callbacks_end_waits_across_processes(stack: Stack) -> None:
    """The receiver (``prefect-pollers webhooks serve``) in one process, the flow run on
    the worker in another: each APIXO callback reaches the wait through Prefect's event
    stream and ends it with one status call, long before the first safety poll (60 s)."""
    port = free_port()
    block = provider_entry("apixo").simulator_block(
        stack.simulator_url,
        time_scale=1.0,  # the safety cadence stays 60 s while the simulator runs fast
        callback_base_url=f"http://127.0.0.1:{port}",
        webhook_secret=secrets.token_urlsafe(32),
    )
    async with api_client(stack.api_url):
        await block.asave("apixo-callbacks", overwrite=True)
    receiver = Process(
        "webhooks",
        [
            sys.executable,
            "-m",
            "prefect_pollers.cli",
            "webhooks",
            "serve",
            "--port",
            str(port),
            "--block",
            "apixo-credentials/apixo-callbacks",
        ],
        stack.env,
        stack.workdir,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            await until_healthy(http, receiver)
            before = stack.simulator_stats()["apixo"]
            started = time.monotonic()
            output = stack.cli("deployment", "run", "generation-grid/callback-covers")
            match = re.search(r"UUID: ([0-9a-f-]{36})", output)
            assert match, output
            async with api_client(stack.api_url) as client:
                flow_run = await poll(
                    lambda: client.read_flow_run(UUID(match.group(1))),
                    lambda run: run.state_type in TERMINAL,
                    timeout=120,
                )
            elapsed = time.monotonic() - started
            assert flow_run.state_type == StateType.COMPLETED, (
                f"{flow_run.state}\n{stack.worker.tail() if stack.worker else ''}"
            )
            after = stack.simulator_stats()["apixo"]
            received = (await http.get("/health")).json()
    finally:
        receiver.stop(signal.SIGTERM, 20)
    jobs = after["submits"] - before["submits"]
    assert jobs == 4
    assert after["callbacks_sent"] - before["callbacks_sent"] == 4
    # One confirming status call per job: no wait polled before its callback woke it.
    assert after["status_calls"] - before["status_calls"] == 4, receiver.tail()
    # The flow run's own time, Running to Completed on the server's clock: the deployment
    # run command and the worker's pickup (seconds more on a loaded machine) are not waits.
    assert flow_run.start_time and flow_run.end_time
    run_time = (flow_run.end_time - flow_run.start_time).total_seconds()
    assert run_time < 60, f"run {run_time:.1f} s, {elapsed:.1f} s from `deployment run`"
    # Accepted, and delivered through events: no wait runs in the receiver's process.
    assert received["accepted"] == 4 and received["deliveries"] == {"kept": 4}
    assert received["rejected"] == {}


async def test_a_killed_worker_s_run_is_crashed_re_run_and_re_attaches(stack: Stack) -> None:
    """``prefect-pollers recovery install``, then the worker and its flow-run process
    SIGKILLed mid-batch (nobody is left to report the crash): the silent-run automation
    marks the run Crashed once its heartbeats stop, the re-run automation schedules it
    again, a new worker runs it, and it re-attaches to every scan: 0 resubmits, one
    outcome per company in one table."""
    assert stack.worker is not None
    stack.run(
        [
            *(sys.executable, "-m", "prefect_pollers.cli", "recovery", "install"),
            *("--heartbeat-frequency", str(HEARTBEAT_S), "--silence", str(SILENCE_S)),
        ]
    )
    # Scans of 10-20 s, all 20 at once: the batch is mid-flight when the worker dies.
    state = stack.simulator_state
    state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11, exona_duration=(500, 1000))
    before = stack.simulator_stats()["exona"]
    try:
        output = stack.cli(
            "deployment",
            "run",
            f"batch-scans/{NIGHTLY}",
            "--params",
            json.dumps({"max_age_days": None, "concurrency": 20}),
        )
        match = re.search(r"UUID: ([0-9a-f-]{36})", output)
        assert match, output
        flow_run_id = UUID(match.group(1))
        started = time.monotonic()

        async def exona() -> dict[str, Any]:
            return stack.simulator_stats()["exona"]

        # Kill once every scan is submitted and its wait has polled (its ref recorded).
        polled = len(before["status_calls_per_job"]) + 20
        submitted = await poll(
            exona, lambda s: len(s["status_calls_per_job"]) >= polled, timeout=90
        )
        assert len(submitted["status_calls_per_job"]) == polled, stack.worker.tail()
        assert submitted["jobs_in_flight"] >= 10, submitted  # mid-batch
        killed = time.monotonic()
        assert stack.worker.kill_tree() >= 2  # the worker, its flow-run process: all at once
        print(f"killed after {time.monotonic() - started:.1f} s")
        stack.start_worker("worker-after-kill")
        async with api_client(stack.api_url) as client:
            flow_run = await poll(
                lambda: client.read_flow_run(flow_run_id),
                lambda run: run.state_type in TERMINAL and run.state_type != StateType.CRASHED,
                timeout=SILENCE_S + 120,  # found silent, scheduled again, run again
            )
            recovered_s = time.monotonic() - killed
            print(f"completed {recovered_s:.1f} s after the kill")
            history = await client.read_flow_run_states(flow_run_id)
            assert flow_run.state_type == StateType.COMPLETED, (
                f"{flow_run.state}\n{stack.worker.tail()}\n"
                + "\n".join(f"{s.timestamp} {s.name}: {s.message}" for s in history)
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
    finally:
        state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11)
        async with api_client(stack.api_url) as client:  # their 40 s silence is for this test
            for name in (SILENT_RUNS, CRASHED_RUNS):
                for automation in await client.read_automations_by_name(name):
                    await client.delete_automation(automation.id)
    after = stack.simulator_stats()["exona"]

    names = [s.name for s in history]
    crashed = next(s for s in history if s.type == StateType.CRASHED)
    assert crashed.message and "No heartbeat" in crashed.message, names
    assert names[names.index("Crashed") + 1] == "AwaitingRetry", names
    assert flow_run.run_count == 2, names

    # Nothing submitted twice: the re-run found every ref the first run recorded.
    assert after["submits"] - before["submits"] == 20
    assert after["duplicate_submits"] == before["duplicate_submits"]
    keys = {
        key: count
        for key, count in after["submits_per_idempotency_key"].items()
        if str(flow_run_id) in key
    }
    assert len(keys) == 20 and set(keys.values()) == {1}

    [table] = [a for a in artifacts if a.type == "table"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert len(rows) == 20 and len({row["company"] for row in rows}) == 20
    assert len({row["scan_id"] for row in rows}) == 20
    status = {row["company"]: row["status"] for row in rows}
    assert status.pop("Ghost Holdings") == "failed" and set(status.values()) == {"succeeded"}
