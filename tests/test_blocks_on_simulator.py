"""Every provider's block against the real simulator: success, each failure kind, timeout,
401, 422 and malformed bodies, with the provider's own preset (scaled to simulator time)."""

import asyncio
from decimal import Decimal

import pytest

from prefect_pollers import (
    ApixoCredentials,
    AuthenticationError,
    BadRequestError,
    ExonaCredentials,
    JobCancelledError,
    JobExpiredError,
    JobFailedError,
    PollPolicy,
    ProviderUnavailableError,
    WaitTimeoutError,
)
from prefect_pollers.client import shared_client
from prefect_pollers.engine import MalformedResponseError
from prefect_pollers.providers import apixo_policy
from prefect_pollers.testing.simulator import FaultRule, SimulatorConfig
from tests.constants import SIM_SCALE
from tests.providers import PROVIDER_TABLE

CASES = PROVIDER_TABLE
IDS = [c.name for c in CASES]


def configure(sim, **fields):
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=3, **fields)


def block(case, sim, key="sim-key"):
    return case.block(sim.base_url(case.name), key, policy_scale=SIM_SCALE)


def stats(sim, case):
    return sim.state.stats()[case.name]


async def run(creds, request, policy=None):
    ref = await shared_client(creds).submit(request)
    status = await shared_client(creds).wait(ref, policy)
    return await shared_client(creds).fetch_result(ref, status)


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_success_returns_the_typed_result(sim, case):
    configure(sim, **case.sim_config)
    result = await run(block(case, sim), case.ok)
    assert isinstance(result, case.result_type) and result.job_id
    counters = stats(sim, case)
    assert counters["submits"] == 1 and counters["http_429"] == 0
    assert counters["unobserved_terminal_jobs"] == 0


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_failure_raises_job_failed_with_provider_details(sim, case):
    configure(sim, **case.sim_config, failure_rate=1.0 if case.failing is None else 0.0)
    with pytest.raises(JobFailedError) as info:
        await run(block(case, sim), case.failing or case.ok)
    assert info.value.status.error_message
    if case.fail_code:
        assert info.value.error_code == case.fail_code
    assert case.name in str(info.value) and info.value.job_id in str(info.value)


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_a_job_that_never_finishes_times_out_at_the_deadline(sim, case):
    configure(sim, **case.sim_config, never_finish_rate=1.0)
    creds = block(case, sim)
    ref = await shared_client(creds).submit(case.ok)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WaitTimeoutError) as info:
        await shared_client(creds).wait(ref, PollPolicy(interval=5, deadline=100))
    assert info.value.last_status is not None
    elapsed = loop.time() - started
    assert elapsed <= 100 * SIM_SCALE + 5 * SIM_SCALE + 1.0  # deadline + one interval + slack


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_wrong_key_fails_after_one_request(sim, case):
    configure(sim, **case.sim_config)
    with pytest.raises(AuthenticationError) as info:
        await shared_client(block(case, sim, key="wrong-SENTINEL")).submit(case.ok)
    assert stats(sim, case)["http_401"] == 1 and "wrong-SENTINEL" not in str(info.value)
    assert info.value.http_status == 401 and case.name in str(info.value)


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_request_refused_by_provider_is_a_bad_request_after_one_call(sim, case):
    configure(sim, **case.sim_config)
    with pytest.raises(BadRequestError) as info:
        await shared_client(block(case, sim)).submit(case.refused)
    counters = stats(sim, case)
    assert info.value.http_status == 422 and counters["http_422"] == 1
    assert counters["submits"] == 0 and info.value.path


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize(
    "kind", ["malformed_json", "empty", "html", "missing_field", "mistyped_field"]
)
async def test_malformed_status_bodies_exhaust_the_error_budget_as_typed_errors(sim, case, kind):
    configure(
        sim,
        **case.sim_config,
        faults=[FaultRule(provider=case.name, route="status", kind=kind, first=20)],
    )
    creds = block(case, sim)
    ref = await shared_client(creds).submit(case.ok)
    with pytest.raises(ProviderUnavailableError) as info:
        await shared_client(creds).wait(
            ref, PollPolicy(interval=1, error_budget=2, error_backoff=1)
        )
    cause = info.value.__cause__
    assert isinstance(cause, (MalformedResponseError, Exception))
    assert cause.job_id == ref.job_id and cause.path and cause.http_status
    assert stats(sim, case)["faults_injected"][kind] == 3


async def test_modelroute_cancelled_and_expired_are_distinct_outcomes(sim):
    case = CASES[IDS.index("modelroute")]
    configure(sim, modelroute_cancel_rate=1.0)
    with pytest.raises(JobCancelledError):
        await run(block(case, sim), case.ok)
    configure(sim, modelroute_expire_rate=1.0)
    with pytest.raises(JobExpiredError):
        await run(block(case, sim), case.ok)


async def test_modelroute_result_has_decimal_cost_usage_and_latency(sim):
    case = CASES[IDS.index("modelroute")]
    configure(sim)
    result = await run(block(case, sim), case.ok)
    assert isinstance(result.cost, Decimal) and result.latency_ms is not None
    assert result.usage.input_tokens >= 0 and result.status == "COMPLETED"


async def test_modelroute_waits_sharing_a_block_stay_within_the_rate_limit(sim):
    case = CASES[IDS.index("modelroute")]
    configure(sim, rate_limit=20, rate_window_s=20)
    creds = block(case, sim)
    results = await asyncio.gather(*(run(creds, case.ok) for _ in range(30)))
    counters = stats(sim, case)
    assert len(results) == 30 and counters["http_429"] == 0
    assert counters["window_max_requests"] <= 20


async def test_apixo_picks_the_schedule_of_the_model():
    creds = ApixoCredentials(api_key="k", base_url="http://127.0.0.1:9")
    from prefect_pollers import JobRef

    policy = creds.default_policy(JobRef(provider="apixo", job_id="t", context={"model": "sora-2"}))
    assert (policy.initial_delay, policy.interval, policy.deadline) == (60, 15, 600)
    assert apixo_policy("unknown-model").interval == 5


async def test_apixo_result_urls_are_parsed_from_result_json(sim):
    case = CASES[IDS.index("apixo")]
    configure(sim)
    result = await run(block(case, sim), case.ok)
    assert result.result_urls and all(u.startswith("http") for u in result.result_urls)
    assert result.model == "nano-banana"


async def test_twyn_phases_are_observed_in_order(sim):
    case = CASES[IDS.index("twyn")]
    configure(sim, **case.sim_config)
    creds = block(case, sim)
    ref = await shared_client(creds).submit(case.ok)
    phases = []
    await shared_client(creds).wait(ref, on_change=lambda old, new: phases.append(new.raw_status))
    expected = [
        "PROCESSING_CONFIG",
        "PROCESSING_SIMULATION",
        "PROCESSING_ANALYSIS",
        "COMPLETED_ANALYSIS",
    ]
    assert [p for p in expected if p in phases] == phases[
        -len([p for p in expected if p in phases]) :
    ]
    assert phases[-1] == "COMPLETED_ANALYSIS"


async def test_generic_cancel_aborts_the_remote_job(sim):
    case = CASES[IDS.index("generic")]
    configure(sim)
    creds = block(case, sim)
    ref = await shared_client(creds).submit(case.ok)
    assert await shared_client(creds).cancel(ref) is True
    with pytest.raises(JobCancelledError):
        await shared_client(creds).wait(ref)
    assert stats(sim, case)["cancels"] == 1


async def test_providers_without_a_cancel_endpoint_say_so():
    creds = ExonaCredentials(api_key="k")
    from prefect_pollers import JobRef

    assert await shared_client(creds).cancel(JobRef(provider="exona", job_id="scan_1")) is False


async def test_a_job_not_visible_yet_is_waited_for_not_lost(sim):
    """An eventually consistent API: the generic job answers 404 for its first 30 s."""
    from prefect_pollers import PollPolicy
    from prefect_pollers.engine import JobNotFoundError
    from prefect_pollers.testing.registry import provider_entry
    from prefect_pollers.testing.simulator import SimulatorConfig

    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=2, not_visible_for_s=30)
    entry = provider_entry("generic")
    block = entry.simulator_block(sim.url, time_scale=SIM_SCALE)
    client = block.get_client()
    async with client:
        ref = await client.submit(entry.sample_request)
        status = await client.wait(ref, PollPolicy(interval=5, not_found_grace=60))
        assert status.state.value == "succeeded"
        assert sim.stats()["generic"]["not_visible_404"] >= 2
        ref = await client.submit(entry.sample_request)
        with pytest.raises(JobNotFoundError):
            await client.wait(ref, PollPolicy(interval=5, not_found_grace=0))
