"""Cancelling a flow run cancels its remote jobs where the provider can; a crash never does."""

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
from prefect import flow

from flows.generic_jobs import simulator_generic_api
from prefect_pollers import (
    BatchItem,
    ExonaCredentials,
    JobCancelledError,
    JobRef,
    Outcome,
    PollPolicy,
    run_job,
    run_provider_batch,
)
from prefect_pollers.ops import cancellation
from prefect_pollers.ops.cancellation import cancel_remote_jobs
from prefect_pollers.testing.registry import provider_entry
from prefect_pollers.testing.simulator import SimulatorConfig
from tests.constants import SIM_SCALE

pytestmark = pytest.mark.usefixtures("prefect_harness")
LONG_WAIT = PollPolicy(interval=1, deadline=3600)


def blocks(sim):
    generic = simulator_generic_api(sim.base_url("generic"), "sim-key", policy_scale=SIM_SCALE)
    exona = ExonaCredentials(
        api_key="sim-key", base_url=sim.base_url("exona"), policy_scale=SIM_SCALE
    )
    return generic, exona


async def start_waiting_flow(sim, generic, exona, jobs=3):
    """Start a flow waiting on never-finishing jobs; returns its asyncio task once all wait."""
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=4, never_finish_rate=1.0)

    @flow
    async def waiting():
        await asyncio.gather(
            *(
                run_job(generic, {"kind": "render", "params": {"i": i}}, policy=LONG_WAIT)
                for i in range(jobs)
            ),
            run_job(
                exona,
                {"company_name": "Acme", "company_website": "https://acme.ai"},
                policy=LONG_WAIT,
            ),
        )

    running = asyncio.create_task(waiting())
    # Until every job's wait is tracked (each submit goes through the ledger first).
    for _ in range(600):
        tracked = sum(len(waits) for waits in cancellation._in_flight.values())
        stats = sim.state.stats()
        if tracked >= jobs + 1 and stats["generic"]["status_calls"] >= jobs:
            break
        await asyncio.sleep(0.05)
    return running


def the_run_id():
    (run_id,) = list(cancellation._in_flight)
    return run_id


async def stop(running):
    running.cancel()
    # A wait may see its job cancelled by the hook before the task is: its typed error.
    with contextlib.suppress(asyncio.CancelledError, JobCancelledError):
        await running


async def test_cancellation_hook_cancels_jobs_in_flight_in_this_process(sim, caplog):
    generic, exona = blocks(sim)
    running = await start_waiting_flow(sim, generic, exona)
    run_id = the_run_id()
    with caplog.at_level(logging.INFO, logger="prefect_pollers.ops.cancellation"):
        await cancel_remote_jobs(None, SimpleNamespace(id=run_id), None)
    await stop(running)
    assert sim.state.stats()["generic"]["cancels"] == 3
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert (
        "exona job" in messages and "keeps running" in messages and "no cancel endpoint" in messages
    )
    assert messages.count("cancelled with the provider") == 3


@pytest.mark.slow  # 2 x 5 s: real batches of 6-9 s on the session simulator
@pytest.mark.parametrize("name", ["openai-batch", "anthropic-batch"])
async def test_a_cancelled_run_cancels_its_provider_batches_and_a_rerun_keeps_what_arrived(
    sim, name
):
    # Batches of 6-9 s: cancelled 3 s after both are created, some requests have
    # finished and the others have not.
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=4, batch_duration=(600, 900))
    entry = provider_entry(name)
    block = entry.block(
        sim.base_url(name), "sim-key", policy_scale=SIM_SCALE, max_requests_per_batch=10
    )
    run = uuid.uuid4().hex[:8]
    items = [
        BatchItem(label=f"ticket {i}", key=f"cancel-{run}-{i}", request=entry.sample_request)
        for i in range(20)
    ]

    @flow
    async def triage():
        return await run_provider_batch(block, items)

    running = asyncio.create_task(triage())
    for _ in range(600):  # until both batches' waits are tracked
        if sum(len(waits) for waits in cancellation._in_flight.values()) >= 2:
            break
        await asyncio.sleep(0.05)
    created_at = time.monotonic()
    await asyncio.sleep(3.0)
    await cancel_remote_jobs(None, SimpleNamespace(id=the_run_id()), None)
    assert time.monotonic() - created_at < 6.0, "cancelled too late to test anything"
    await stop(running)
    assert sim.state.stats()[name]["cancels"] == 2

    outcomes = await flow(triage.fn, name="triage-again")()  # a re-run, another flow run
    stats = sim.state.stats()[name]
    assert stats["batches_created"] == 2  # found in the ledger, not created again
    rows = list(outcomes.read())
    assert sorted(row.key for row in rows) == sorted(item.key for item in items)
    counts = Counter(row.outcome for row in rows)
    assert set(counts) == {Outcome.SUCCEEDED, Outcome.CANCELLED}, counts


@pytest.mark.slow  # 11 s
async def test_cancellation_hook_in_another_process_finds_jobs_through_events(sim, caplog):
    generic, exona = blocks(sim)
    suffix = uuid.uuid4().hex[:8]
    await generic.save(f"generic-{suffix}")
    await exona.save(f"exona-{suffix}")
    generic = await type(generic).aload(f"generic-{suffix}")
    exona = await ExonaCredentials.aload(f"exona-{suffix}")
    running = await start_waiting_flow(sim, generic, exona)
    run_id = the_run_id()
    await stop(running)  # the flow's process is gone: only its events remain
    cancellation._in_flight.clear()
    with caplog.at_level(logging.INFO, logger="prefect_pollers.ops.cancellation"):
        for _ in range(40):  # events reach the server asynchronously
            await cancel_remote_jobs(None, SimpleNamespace(id=run_id), None)
            said = " ".join(r.getMessage() for r in caplog.records)
            if sim.state.stats()["generic"]["cancels"] >= 3 and "keeps running" in said:
                break  # the exona job's event may reach the server after the others'
            await asyncio.sleep(0.25)
    assert sim.state.stats()["generic"]["cancels"] >= 3
    assert "keeps running" in " ".join(r.getMessage() for r in caplog.records)


@pytest.mark.slow  # 7 s
async def test_an_interrupted_flow_without_cancellation_cancels_nothing(sim):
    generic, exona = blocks(sim)
    running = await start_waiting_flow(sim, generic, exona)
    await stop(running)  # a crash or a worker restart: no on_cancellation hook runs
    await asyncio.sleep(0.2)
    assert sim.state.stats()["generic"]["cancels"] == 0
    cancellation._in_flight.clear()


async def test_finished_waits_leave_nothing_to_cancel(sim):
    generic, _ = blocks(sim)

    @flow
    async def quick():
        return await run_job(generic, {"kind": "render", "params": {}})

    await quick()
    assert cancellation._in_flight == {}


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("job_id")])
def test_a_wait_ended_by_any_error_is_forgotten(monkeypatch, error):
    monkeypatch.setattr(cancellation.current_flow_run, "get_id", lambda: "run-errors")
    ref = JobRef(provider="exona", job_id="scan_1")
    with pytest.raises(type(error)), cancellation.tracked(ExonaCredentials(api_key="k"), ref):
        raise error
    assert "run-errors" not in cancellation._in_flight


def test_an_interrupted_wait_stays_for_the_cancellation_hook(monkeypatch):
    monkeypatch.setattr(cancellation.current_flow_run, "get_id", lambda: "run-interrupted")
    ref = JobRef(provider="exona", job_id="scan_2")
    with (
        pytest.raises(asyncio.CancelledError),
        cancellation.tracked(ExonaCredentials(api_key="k"), ref),
    ):
        raise asyncio.CancelledError
    assert list(cancellation._in_flight.pop("run-interrupted")) == [("exona", "scan_2")]
