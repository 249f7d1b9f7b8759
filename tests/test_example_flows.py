"""The example flows of every provider, run under Prefect against the simulator."""

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.execution_batch import execution_batch
from flows.generation_grid import generation_grid
from flows.generic_jobs import generic_jobs, simulator_generic_api
from flows.scenario_sweep import expand_grid, scenario_sweep
from prefect_pollers import ApixoCredentials, ModelRouteCredentials, TwynCredentials
from prefect_pollers.testing.simulator import SimulatorConfig
from tests.constants import SIM_SCALE

pytestmark = pytest.mark.usefixtures("prefect_harness")


def creds(block_type, sim, name):
    return block_type(api_key="sim-key", base_url=sim.base_url(name), policy_scale=SIM_SCALE)


async def table(key):
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert len(artifacts) >= 1 and artifacts[0].type == "table"
    return str(artifacts[0].data)


async def test_scenario_sweep(sim):
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE,
        seed=2,
        twyn_config_duration=(10, 20),
        twyn_simulation_duration=(20, 40),
        twyn_analysis_duration=(10, 20),
    )
    rows = await scenario_sweep(
        scenarios=["heatwave", "will-fail"],
        grid={"days": [1, 2]},
        credentials=creds(TwynCredentials, sim, "twyn"),
        concurrency=2,
        artifact_key="sweep-test",
    )
    assert [r.status for r in rows] == ["succeeded", "succeeded", "failed", "failed"]
    assert sim.state.stats()["twyn"]["max_jobs_in_flight"] <= 2
    assert "will-fail" in await table("sweep-test")


def test_expand_grid():
    assert expand_grid({"b": [1, 2], "a": ["x"]}) == [{"a": "x", "b": 1}, {"a": "x", "b": 2}]
    assert expand_grid({}) == [{}]
    with pytest.raises(ValueError, match="no values"):
        expand_grid({"a": []})


async def test_generation_grid(sim):
    rows = await generation_grid(
        prompts=["a fox", "fail me"],
        models=["nano-banana", "flux-2"],
        credentials=creds(ApixoCredentials, sim, "apixo"),
        artifact_key="grid-test",
    )
    assert [r.status for r in rows] == ["succeeded", "succeeded", "failed", "failed"]
    assert all(r.result_urls for r in rows[:2]) and "CONTENT_POLICY" in rows[2].error
    assert "nano-banana" in await table("grid-test")


@pytest.mark.slow  # 8 s
async def test_execution_batch_within_rate_limit(sim):
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE, seed=2, rate_limit=30, rate_window_s=30
    )
    executions = [{"model": "m", "input": {"i": i}} for i in range(40)]
    rows = await execution_batch(
        executions=executions,
        credentials=creds(ModelRouteCredentials, sim, "modelroute"),
        artifact_key="exec-test",
    )
    stats = sim.state.stats()["modelroute"]
    assert all(r.status == "succeeded" for r in rows) and len(rows) == 40
    assert stats["http_429"] == 0 and stats["window_max_requests"] <= 30
    assert "exec" in await table("exec-test")


async def test_generic_jobs_with_a_declared_api(sim):
    api = simulator_generic_api(sim.base_url("generic"), "sim-key", policy_scale=SIM_SCALE)
    rows = await generic_jobs(
        jobs=[{"kind": "render", "params": {}}, {"kind": "fail-export", "params": {}}],
        api=api,
        artifact_key="generic-test",
    )
    assert [r.status for r in rows] == ["succeeded", "failed"]
    assert rows[0].output and "fail-export" in await table("generic-test")


@pytest.mark.parametrize("name", ["openai-batch", "anthropic-batch"])
async def test_ticket_triage_in_a_provider_batch(sim, name):
    from flows.ticket_triage import ticket_triage
    from prefect_pollers.testing.registry import provider_entry

    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=3, batch_duration=(60, 120))
    credentials = provider_entry(name).simulator_block(sim.url, time_scale=SIM_SCALE)
    rows = await ticket_triage(credentials=credentials, artifact_key=f"triage-{name}")
    assert len(rows) == 12 and sim.state.stats()[name]["batches_created"] == 1
    failed = [row for row in rows if row.status != "succeeded"]
    assert [row.ticket for row in failed] == ["1006"] and "contains FAIL" in failed[0].error
    assert all(row.answer for row in rows if row.status == "succeeded")
    assert "1006" in await table(f"triage-{name}")
