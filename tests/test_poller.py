"""The poller service on the test server: handed-over jobs waited for, runs resumed.

Each test makes a deployment's flow run Suspended (as a durable wait leaves it),
submits its jobs to the simulator and records their handover, then runs
:class:`PollerService` in this process. The test server runs no automations, so the
runs are resumed through the API: the path taken when the resume event is lost.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelled, Suspended

from flows.generic_jobs import simulator_generic_api
from prefect_pollers import BatchItem, BatchOutcome, ExonaCredentials, Outcome, PollPolicy
from prefect_pollers.client import shared_client
from prefect_pollers.durable.poller import PollerService, shard_of
from prefect_pollers.durable.records import (
    HandedOverJob,
    Handover,
    batch_id,
    durable_records,
    read_outcomes,
    suspend_key,
    write_handover,
    write_outcomes,
)
from prefect_pollers.ledger.durable_rows import open_handover_runs
from prefect_pollers.testing.simulator import SimulatorConfig
from tests.constants import SIM_SCALE

pytestmark = pytest.mark.usefixtures("prefect_harness")
POLICY = PollPolicy(interval=1, deadline=600)


async def suspended_run_with_jobs(sim, jobs: int, generic: bool = False) -> tuple[str, Handover]:
    """A deployment's flow run, Suspended, whose ``jobs`` Exona scans (or generic jobs,
    which have a cancel endpoint) are handed over."""
    name = f"durable-{uuid.uuid4().hex[:8]}"
    if generic:
        block = simulator_generic_api(sim.base_url("generic"), "sim-key", policy_scale=SIM_SCALE)
    else:
        block = ExonaCredentials(
            api_key="sim-key", base_url=sim.base_url("exona"), policy_scale=SIM_SCALE
        )
    await block.save(name)
    credentials = await type(block).aload(name)
    keys = [f"{name}:{i}" for i in range(jobs)]
    batch = batch_id(keys)
    async with get_client() as client:
        flow_id = await client.create_flow_from_name("durable-test")
        deployment_id = await client.create_deployment(flow_id=flow_id, name=name)
        run = await client.create_flow_run_from_deployment(deployment_id)
        await client.set_flow_run_state(
            run.id, Suspended(pause_key=suspend_key(batch), timeout_seconds=600), force=True
        )
    client_ = shared_client(credentials)
    refs = [
        await client_.submit(
            credentials.parse_request(
                {"kind": "render", "params": {"i": i}}
                if generic
                else {"company_name": f"Co {i}", "company_website": f"https://d{i}.example"}
            ),
            idempotency_key=key,
        )
        for i, key in enumerate(keys)
    ]
    handover = Handover(
        flow_run_id=str(run.id),
        batch_id=batch,
        block_type_slug=type(block).get_block_type_slug(),
        block_document_name=name,
        policy=POLICY,
        jobs=[HandedOverJob(key=k, label=k, ref=ref) for k, ref in zip(keys, refs, strict=True)],
    )
    await write_handover(durable_records(), handover)
    return str(run.id), handover


@asynccontextmanager
async def serving(service: PollerService) -> AsyncIterator[PollerService]:
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield service
    finally:
        stop.set()
        await task


async def state_name(flow_run_id: str) -> str | None:
    async with get_client() as client:
        return (await client.read_flow_run(UUID(flow_run_id))).state_name


async def until(check, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.mark.slow  # 9 s
async def test_jobs_are_waited_for_recorded_and_the_run_resumed(sim):
    run_id, handover = await suspended_run_with_jobs(sim, jobs=3)
    async with serving(PollerService(scan_interval=0.2, resume_grace=0.2)) as service:
        await until(lambda: _is_in(run_id, service.resumed))
    outcomes = await read_outcomes(durable_records(), run_id, handover.batch_id)
    assert {key: o.outcome for key, o in outcomes.items()} == {
        job.key: Outcome.SUCCEEDED for job in handover.jobs
    }
    assert {o.job_id for o in outcomes.values()} == {job.ref.job_id for job in handover.jobs}
    assert await state_name(run_id) != "Suspended"
    assert sim.state.stats()["exona"]["unobserved_terminal_jobs"] == 0


@pytest.mark.slow  # 11 s
async def test_a_poller_stopped_mid_wait_loses_nothing_and_polls_nothing_twice(sim):
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=3, exona_duration=(20, 400))
    run_id, handover = await suspended_run_with_jobs(sim, jobs=6)
    store = durable_records()
    async with serving(PollerService(scan_interval=0.2, resume_grace=0.2)):
        await until(lambda: _has_outcomes(store, run_id, handover.batch_id, at_least=1))
    first = await read_outcomes(store, run_id, handover.batch_id)
    assert 1 <= len(first) < 6 and await state_name(run_id) == "Suspended"
    calls = dict(sim.state.stats()["exona"]["status_calls_per_job"])

    async with serving(PollerService(scan_interval=0.2, resume_grace=0.2)) as again:
        await until(lambda: _is_in(run_id, again.resumed))
    outcomes = await read_outcomes(store, run_id, handover.batch_id)
    assert set(outcomes) == {job.key for job in handover.jobs}
    after = sim.state.stats()["exona"]["status_calls_per_job"]
    for outcome in first.values():  # recorded before the stop: not polled again
        assert after[outcome.job_id] == calls[outcome.job_id]
    assert sim.state.stats()["exona"]["duplicate_submits"] == 0


@pytest.mark.slow  # 7 s
async def test_a_poller_takes_only_the_runs_of_its_shard(sim):
    run_id, _ = await suspended_run_with_jobs(sim, jobs=1)
    other = 1 - shard_of(run_id, 2)
    async with serving(PollerService(shard=other, shards=2, scan_interval=0.2)) as service:
        await asyncio.sleep(1.0)
        assert run_id not in service.watching
    assert sim.state.stats()["exona"]["status_calls"] == 0
    assert await state_name(run_id) == "Suspended"


@pytest.mark.slow  # 11 s
async def test_a_cancelled_run_is_dropped(sim):
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=3, never_finish_rate=1.0)
    run_id, _ = await suspended_run_with_jobs(sim, jobs=2)
    async with serving(PollerService(scan_interval=0.2)) as service:
        await until(lambda: _is_in(run_id, service.watching))
        async with get_client() as client:
            await client.set_flow_run_state(UUID(run_id), Cancelled(), force=True)
        await until(lambda: _is_not_in(run_id, service.watching))
    assert run_id not in service.resumed


@pytest.mark.slow  # 8 s
async def test_a_run_cancelled_while_no_poller_watched_gets_its_pending_jobs_cancelled(sim):
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=3, never_finish_rate=1.0)
    run_id, handover = await suspended_run_with_jobs(sim, jobs=3, generic=True)
    done = handover.jobs[0]  # its outcome is recorded: nothing to cancel
    item = BatchItem(label=done.label, key=done.key, request=None)
    outcome = BatchOutcome.of_exception(item, RuntimeError("ended"))
    await write_outcomes(durable_records(), run_id, handover.batch_id, {done.key: outcome})
    async with get_client() as client:  # cancelled with no poller running
        await client.set_flow_run_state(UUID(run_id), Cancelled(), force=True)
    assert run_id in await open_handover_runs(durable_records().ledger)

    async with serving(PollerService(scan_interval=0.2)) as service:
        await until(lambda: _is_not_in(run_id, open_handover_runs(durable_records().ledger)))
        assert run_id not in service.watching and run_id not in service.resumed
    generic = sim.state.stats()["generic"]
    assert generic["cancels"] == 2  # the two jobs without an outcome, found from the ledger


async def test_a_failing_progress_artifact_never_fails_the_wait(sim):
    run_id, handover = await suspended_run_with_jobs(sim, jobs=2)
    missing = handover.model_copy(update={"progress_artifact_id": uuid.uuid4()})
    await write_handover(durable_records(), missing)  # its artifact updates are refused
    async with serving(PollerService(scan_interval=0.2, resume_grace=0.2)) as service:
        await until(lambda: _is_in(run_id, service.resumed))
    assert len(await read_outcomes(durable_records(), run_id, handover.batch_id)) == 2


async def test_a_run_whose_block_was_deleted_backs_off(sim):
    run_id, handover = await suspended_run_with_jobs(sim, jobs=1)
    async with get_client() as client:
        block = await client.read_block_document_by_name(
            handover.block_document_name, handover.block_type_slug
        )
        await client.delete_block_document(block.id)
    service = PollerService(scan_interval=0.2)
    async with serving(service):
        await until(lambda: _is_in(run_id, service._failures))
        await asyncio.sleep(1.0)  # five scans: retried after 0.4 s, then 0.8 s, not each scan
        assert service._failures[run_id].count <= 3
    assert await state_name(run_id) == "Suspended"


def test_a_shard_out_of_range_is_refused():
    with pytest.raises(ValueError, match="shard 2/2"):
        PollerService(shard=2, shards=2)


async def _is_in(item, collection) -> bool:
    return item in collection


async def _is_not_in(item, collection) -> bool:
    if inspect.isawaitable(collection):
        collection = await collection
    return item not in collection


async def _has_outcomes(store, run_id: str, batch: str, at_least: int) -> bool:
    return len(await read_outcomes(store, run_id, batch)) >= at_least


def test_recorded_outcomes_come_back_typed_and_refuse_what_is_no_result_model():
    from prefect_pollers.durable.records import dump_outcome, load_outcome
    from prefect_pollers.providers.exona import ExonaScanResult

    result = ExonaScanResult.model_validate(
        {"job_id": "scan_1", "company_name": "Co", "company_website": "https://co.example"}
    )
    outcome = BatchOutcome.succeeded(BatchItem(label="Co", key="k", request=None), result)
    again = load_outcome(dump_outcome(outcome))
    assert isinstance(again.result, ExonaScanResult) and again.result == result
    forged = {**dump_outcome(outcome), "result_model": "os:system"}
    with pytest.raises(ValueError, match="'os:system', which is not a result model"):
        load_outcome(forged)
