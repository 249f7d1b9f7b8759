"""PollerJob / PollerJobRun: Prefect's JobBlock interface on the real simulator."""

import uuid

import pytest
from prefect.blocks.abstract import JobBlock, JobRun
from prefect.blocks.core import Block

from flows.job_block import job_block
from prefect_pollers import (
    ExonaCredentials,
    InvalidRequestError,
    JobFailedError,
    PollerJob,
    PollerJobRun,
    PollPolicy,
    WaitTimeoutError,
)
from prefect_pollers.tasks.job_block import ProviderCredentials
from prefect_pollers.testing.registry import PROVIDERS
from prefect_pollers.testing.simulator import SimulatorConfig
from tests.constants import SIM_SCALE
from tests.providers import PROVIDER_TABLE

# Job events go to a server: without one, Prefect starts an ephemeral server per process.
pytestmark = pytest.mark.usefixtures("prefect_harness")


def job(case, sim, **fields):
    creds = case.block(sim.base_url(case.name), policy_scale=SIM_SCALE)
    return PollerJob(
        credentials=creds, request=case.ok, **{"idempotency_key": f"t-{uuid.uuid4()}", **fields}
    )


def test_the_job_block_takes_every_registered_provider_s_credentials():
    assert set(ProviderCredentials.__args__) == {entry.block_type for entry in PROVIDERS}
    assert issubclass(PollerJob, JobBlock) and issubclass(PollerJobRun, JobRun)


@pytest.mark.parametrize("case", PROVIDER_TABLE, ids=[c.name for c in PROVIDER_TABLE])
async def test_trigger_wait_and_fetch_the_typed_result(sim, case):
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=3, **case.sim_config)
    run = await job(case, sim).trigger()
    assert isinstance(run, PollerJobRun) and run.ref.provider == case.name
    await run.wait_for_completion()
    result = await run.fetch_result()
    assert isinstance(result, case.result_type) and result.job_id == run.ref.job_id
    assert sim.state.stats()[case.name]["submits"] == 1


async def test_a_second_trigger_under_the_key_reattaches_to_the_job(sim):
    block = job(PROVIDER_TABLE[0], sim)
    first, second = await block.trigger(), await block.trigger()
    assert first.ref.job_id == second.ref.job_id
    assert sim.state.stats()["exona"]["submits"] == 1


async def test_fetch_result_waits_for_a_job_not_waited_for(sim):
    run = await job(PROVIDER_TABLE[0], sim).trigger()
    result = await run.fetch_result()
    assert result.job_id == run.ref.job_id and await run.fetch_result() is result


async def test_a_failed_job_raises_its_typed_error(sim):
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=3, failure_rate=1.0)
    run = await job(PROVIDER_TABLE[0], sim).trigger()
    with pytest.raises(JobFailedError) as info:
        await run.wait_for_completion()
    assert info.value.job_id == run.ref.job_id


async def test_the_job_s_policy_is_the_wait_s(sim):
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=3, never_finish_rate=1.0)
    run = await job(PROVIDER_TABLE[0], sim, policy=PollPolicy(interval=5, deadline=20)).trigger()
    with pytest.raises(WaitTimeoutError):
        await run.fetch_result()


async def test_an_invalid_request_is_refused_when_the_block_is_built(sim):
    creds = ExonaCredentials(api_key="sim-key", base_url=sim.base_url("exona"))
    with pytest.raises(InvalidRequestError, match="company_website"):
        PollerJob(credentials=creds, request={"company_name": "Acme"})
    assert sim.state.stats()["exona"]["submits"] == 0


async def test_outside_a_flow_run_a_key_is_required_and_nothing_is_sent(sim):
    creds = ExonaCredentials(api_key="sim-key", base_url=sim.base_url("exona"))
    block = PollerJob(credentials=creds, request=PROVIDER_TABLE[0].ok)
    with pytest.raises(InvalidRequestError, match="idempotency"):
        await block.trigger()
    assert sim.state.stats()["exona"]["submits"] == 0


def test_the_repr_names_the_job_and_no_key():
    creds = ExonaCredentials(api_key="SENTINEL-key", base_url="http://sim")
    block = PollerJob(credentials=creds, request=PROVIDER_TABLE[0].ok)
    assert "SENTINEL" not in repr(block)


async def test_a_saved_job_loads_by_slug_with_its_provider_s_credentials(sim):
    case = PROVIDER_TABLE[1]  # twyn: same fields as exona, told apart only by its slug
    await job(case, sim, idempotency_key=None).asave("twyn-job", overwrite=True)
    loaded = await Block.aload("poller-job/twyn-job")
    assert isinstance(loaded, PollerJob) and type(loaded.credentials) is case.entry.block_type
    assert loaded.credentials.api_key.get_secret_value() == "sim-key"


async def test_the_example_flow_runs_a_saved_job_on_the_simulator(sim):
    case = PROVIDER_TABLE[0]
    await job(case, sim, idempotency_key=None).asave("acme-scan", overwrite=True)
    result = await job_block("acme-scan")
    assert isinstance(result, case.result_type)
    assert sim.state.stats()["exona"]["submits"] == 1
