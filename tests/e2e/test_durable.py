"""End to end: durable waits on a real server, a process worker and the poller service.

Each in its own process, on the package's stack: the flow run hands its jobs over and
suspends (its process exits), the poller (``prefect-pollers poller``) waits for them
and resumes the run, the worker re-runs it and it completes with every outcome; the
poller SIGKILLed mid-wait and started again loses nothing; a suspended run cancelled
has its remote jobs cancelled; two pollers on two shards never poll the same job; a
healthy durable run's log, read from the API, holds no ERROR (its suspension is INFO).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, Log, StateType
from prefect.events import Event
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

from prefect_pollers.durable.resume import RESUME_EVENT
from prefect_pollers.events.jobs import EVENT_PREFIX
from prefect_pollers.testing.registry import provider_entry
from prefect_pollers.testing.simulator import SimulatorConfig
from tests.e2e.conftest import TERMINAL, TIME_SCALE, Stack, save_never_ending_generic_block
from tests.processes import Process, api_client, descendants, poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("e2e-stack")]

SWEEP = "scenario-sweep/durable-sweep"
SIMULATIONS = 6  # the deployment's 3 scenarios x 2 durations


def start_poller(stack: Stack, name: str, *args: str) -> Process:
    """``prefect-pollers poller`` against the stack's server, scanning every second."""
    return Process(
        name,
        [sys.executable, "-m", "prefect_pollers.cli", "poller", "--scan-interval", "1", *args],
        stack.env,
        stack.workdir,
    )


@pytest.fixture
def poller(stack: Stack) -> Iterator[Process]:
    """One poller for the test, stopped after it."""
    process = start_poller(stack, "poller")
    yield process
    process.stop(signal.SIGTERM, 10)


def flow_processes(stack: Stack) -> list[str]:
    """The command lines of the worker's flow-run processes alive now."""
    assert stack.worker is not None
    alive = []
    for pid in descendants(stack.worker.popen.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "prefect.engine" in command:
            alive.append(command)
    return alive


def run_deployment(stack: Stack, name: str, **parameters: Any) -> UUID:
    """Start a run of deployment ``name``; its flow run id."""
    args = ["deployment", "run", name]
    if parameters:
        args += ["--params", json.dumps(parameters)]
    match = re.search(r"UUID: ([0-9a-f-]{36})", stack.cli(*args))
    assert match
    return UUID(match.group(1))


async def until_state(stack: Stack, flow_run_id: UUID, name: str, timeout: float) -> FlowRun:
    """Poll the run until its state is ``name`` (or terminal); the run."""
    async with api_client(stack.api_url) as client:
        return await poll(
            lambda: client.read_flow_run(flow_run_id),
            lambda run: run.state_name == name or run.state_type in TERMINAL,
            timeout=timeout,
        )


def twyn(stack: Stack) -> dict[str, Any]:
    return stack.simulator_stats()["twyn"]


async def events_named(client: PrefectClient, name: str, flow_run_id: str) -> list[Event]:
    """The events called ``name`` related to (or about) flow run ``flow_run_id``."""
    flow_run = f"prefect.flow-run.{flow_run_id}"
    related = EventFilter(
        event=EventNameFilter(name=[name]), related=EventRelatedFilter(id=[flow_run])
    )
    page = await client.read_events(filter=related, limit=50)
    return list(page.events)


async def terminal_events(client: PrefectClient, flow_run_id: str) -> list[Event]:
    """The terminal job events of flow run ``flow_run_id``."""
    names = [f"{EVENT_PREFIX}.{state}" for state in ("succeeded", "failed", "cancelled", "expired")]
    found = []
    for name in names:
        found += await events_named(client, name, flow_run_id)
    return found


async def _async(value: Any) -> Any:
    """``value`` as an awaitable, for :func:`poll` of what is read at once."""
    return value


async def test_a_suspended_sweep_frees_its_worker_and_survives_a_killed_poller(
    stack: Stack, poller: Process
) -> None:
    # Simulations of 10-19 s, so that the poller is killed while they run even when the
    # hand-over takes a loaded machine 10 s; their block's policy runs at half the
    # simulator's speed (the Twyn guide's 600 s deadline: 24 s).
    state = stack.simulator_state
    state.config = SimulatorConfig(
        time_scale=TIME_SCALE,
        seed=5,
        twyn_config_duration=(120.0, 240.0),
        twyn_simulation_duration=(240.0, 480.0),
        twyn_analysis_duration=(120.0, 240.0),
    )
    slow = provider_entry("twyn").simulator_block(stack.simulator_url, time_scale=2 * TIME_SCALE)
    async with api_client(stack.api_url):
        await slow.asave("twyn-slow", overwrite=True)
    before = twyn(stack)
    try:
        flow_run_id = run_deployment(stack, SWEEP, credentials="twyn-slow")
        suspended = await until_state(stack, flow_run_id, "Suspended", timeout=90)
        assert suspended.state_name == "Suspended", f"{suspended.state}\n{stack.worker.tail()}"
        submitted = twyn(stack)
        assert submitted["submits"] - before["submits"] == SIMULATIONS
        # The flow-run process has exited: nothing of the run holds the worker.
        alive = await poll(
            lambda: _async(flow_processes(stack)), lambda found: not found, timeout=30
        )
        assert alive == [], alive

        # The poller picks the jobs up and polls them; killed mid-wait, started again.
        polling = await poll(
            lambda: _async(twyn(stack)),
            lambda s: s["status_calls"] - submitted["status_calls"] >= SIMULATIONS,
            timeout=60,
        )
        assert polling["jobs_in_flight"] >= 1, poller.tail()
        poller.kill_tree()
        restarted = start_poller(stack, "poller-restarted")
        try:
            done = await until_state(stack, flow_run_id, "Completed", timeout=120)
        finally:
            restarted.stop(signal.SIGTERM, 10)
        assert done.state_type == StateType.COMPLETED, f"{done.state}\n{restarted.tail()}"
        async with api_client(stack.api_url) as client:
            history = [s.name for s in await client.read_flow_run_states(flow_run_id)]
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
    finally:
        state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11)
    after = twyn(stack)

    assert "Suspended" in history and history[-1] == "Completed", history
    assert history.count("Suspended") == 1, history  # the batch suspends once
    assert after["submits"] - before["submits"] == SIMULATIONS  # nothing submitted twice
    assert after["duplicate_submits"] == before["duplicate_submits"]
    [progress] = [a for a in artifacts if a.type == "progress"]  # the poller kept it going
    assert progress.data == 100.0 and f"{SIMULATIONS} of {SIMULATIONS}" in (
        progress.description or ""
    )
    [table] = [a for a in artifacts if a.type == "table" and a.key == "twyn-durable-sweep"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert len(rows) == SIMULATIONS and {row["status"] for row in rows} == {"succeeded"}
    assert len({row["simulation_id"] for row in rows}) == SIMULATIONS
    # The restarted poller emitted the resume event once, and the automation acted on it
    # (not the poller's fallback resume through the API): both read from the events API.
    async with api_client(stack.api_url) as client:
        executed = await poll(
            lambda: events_named(client, "prefect.automation.action.executed", str(flow_run_id)),
            lambda found: len(found) >= 1,
            timeout=30,
        )
        resume_events = await events_named(client, RESUME_EVENT, str(flow_run_id))
    assert len(resume_events) == 1, resume_events
    assert [event.payload["action_type"] for event in executed] == ["resume-flow-run"], executed


async def test_cancelling_a_suspended_run_cancels_its_remote_jobs(
    stack: Stack, poller: Process
) -> None:
    state = stack.simulator_state
    state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11, never_finish_rate=1.0)
    try:
        before = stack.simulator_stats()["generic"]
        flow_run_id = run_deployment(
            stack,
            "generic-jobs/render-every-6-hours",
            api=await save_never_ending_generic_block(stack),
            durable={"handover_after": 0},
        )
        suspended = await until_state(stack, flow_run_id, "Suspended", timeout=90)
        assert suspended.state_name == "Suspended", f"{suspended.state}\n{stack.worker.tail()}"
        jobs = stack.simulator_stats()["generic"]["submits"] - before["submits"]
        assert jobs == 3
        # The poller has picked the jobs up: it polls them.
        await poll(
            lambda: _async(stack.simulator_stats()["generic"]),
            lambda s: s["status_calls"] - before["status_calls"] >= jobs,
            timeout=30,
        )
        stack.cli("flow-run", "cancel", str(flow_run_id))
        after = await poll(
            lambda: _async(stack.simulator_stats()["generic"]),
            lambda s: s["cancels"] - before["cancels"] >= jobs,
            timeout=60,
        )
        cancelled = await until_state(stack, flow_run_id, "Cancelled", timeout=30)
    finally:
        state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11)
    assert after["cancels"] - before["cancels"] == jobs, poller.tail()
    assert cancelled.state_type == StateType.CANCELLED, cancelled.state


async def test_two_pollers_on_two_shards_never_poll_the_same_job(stack: Stack) -> None:
    pollers = [start_poller(stack, f"poller-{i}", "--shard", f"{i}/2") for i in range(2)]
    try:
        before = twyn(stack)
        runs = [run_deployment(stack, SWEEP) for _ in range(2)]
        done = [await until_state(stack, run, "Completed", timeout=180) for run in runs]
    finally:
        for process in pollers:
            process.stop(signal.SIGTERM, 10)
    assert [run.state_type for run in done] == [StateType.COMPLETED] * 2, [
        p.tail() for p in pollers
    ]
    # Whoever waits for a job emits its terminal event (read from the events API): two
    # pollers waiting for the same job would each emit one.
    async with api_client(stack.api_url) as client:
        for run in runs:
            ended = await poll(
                lambda run=run: terminal_events(client, str(run)),
                lambda found: len(found) >= SIMULATIONS,
                timeout=30,
            )
            per_job = Counter(event.resource.id for event in ended)
            assert len(per_job) == SIMULATIONS and set(per_job.values()) == {1}, per_job
    after = twyn(stack)
    assert after["submits"] - before["submits"] == 2 * SIMULATIONS
    assert after["duplicate_submits"] == before["duplicate_submits"]


async def run_logs(client: PrefectClient, flow_run_id: UUID) -> list[Log]:
    """Every log of flow run ``flow_run_id`` held by the server."""
    run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    logs: list[Log] = []
    while page := await client.read_logs(log_filter=run, offset=len(logs), limit=200):
        logs += page
    return logs


async def test_a_healthy_durable_run_logs_its_suspension_at_info_and_no_error(
    stack: Stack, poller: Process
) -> None:
    flow_run_id = run_deployment(stack, SWEEP)
    done = await until_state(stack, flow_run_id, "Completed", timeout=180)
    assert done.state_type == StateType.COMPLETED, f"{done.state}\n{poller.tail()}"
    async with api_client(stack.api_url) as client:
        history = [s.name for s in await client.read_flow_run_states(flow_run_id)]
        # Both processes' logs, the suspended one's and the resumed one's, sent at exit.
        logs = await poll(
            lambda: run_logs(client, flow_run_id),
            lambda found: sum(log.message.startswith("Finished in state") for log in found) >= 2,
            timeout=30,
        )
    assert "Suspended" in history, history
    finished = {log.message: log.level for log in logs if log.message.startswith("Finished in")}
    [suspended] = [
        message for message in finished if message.startswith("Finished in state Suspended(")
    ]
    assert finished[suspended] == logging.INFO, finished  # Prefect's own line, lowered
    errors = [(log.level, log.name, log.message) for log in logs if log.level >= logging.ERROR]
    assert errors == [], errors


TRIAGE = "ticket-triage/nightly-ticket-triage"
TICKETS = 12  # flows/data/tickets.csv


async def test_a_durable_provider_batch_suspends_and_reads_one_outcome_per_ticket(
    stack: Stack, poller: Process
) -> None:
    # Batches of 5-10 s (at the stack's time scale): the flow hands the batch over at
    # once (the deployment's handover_after: 0), so it is still running when it does.
    state = stack.simulator_state
    state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11, batch_duration=(250.0, 500.0))
    before = stack.simulator_stats()["openai-batch"]
    try:
        flow_run_id = run_deployment(stack, TRIAGE)
        suspended = await until_state(stack, flow_run_id, "Suspended", timeout=90)
        assert suspended.state_name == "Suspended", f"{suspended.state}\n{stack.worker.tail()}"
        created = stack.simulator_stats()["openai-batch"]
        assert created["batches_created"] - before["batches_created"] == 1
        alive = await poll(
            lambda: _async(flow_processes(stack)), lambda found: not found, timeout=30
        )
        assert alive == [], alive
        done = await until_state(stack, flow_run_id, "Completed", timeout=180)
        assert done.state_type == StateType.COMPLETED, f"{done.state}\n{poller.tail()}"
        async with api_client(stack.api_url) as client:
            history = [s.name for s in await client.read_flow_run_states(flow_run_id)]
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
    finally:
        state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11)
    after = stack.simulator_stats()["openai-batch"]

    assert history.count("Suspended") == 1 and history[-1] == "Completed", history
    # Created once: the resumed run found the batch and its upload in the ledger.
    assert after["batches_created"] - before["batches_created"] == 1
    assert after["files_uploaded"] - before["files_uploaded"] == 1
    [table] = [a for a in artifacts if a.type == "table" and a.key == "ticket-triage"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert sorted(row["ticket"] for row in rows) == sorted({row["ticket"] for row in rows})
    assert len(rows) == TICKETS
    assert {row["status"] for row in rows} <= {"succeeded", "failed"}
    assert all(row["answer"] for row in rows if row["status"] == "succeeded"), rows
    assert len({row["batch_id"] for row in rows}) == 1, rows
