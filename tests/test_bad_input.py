"""Bad input, refused credentials and every fault, for each provider, as typed errors.

Table-driven over the five providers, against the simulator (respx where it cannot
answer: 403 and 400):

- every documented error and every injected fault, on the submit, status and result
  routes, is a typed ``PollerError`` whose message names the provider, the job id
  (once there is one), the URL path and the HTTP status (when a response came);
- wrong credentials (401, 403) and refused requests (400, 422) fail after exactly one
  request through the Prefect tasks, which retry other errors;
- invalid policies and parameters are refused with a clear message before anything
  is submitted.

What other modules already cover is not repeated here: submit 401/422 on the blocks
and for Exona through the tasks (test_blocks_on_simulator, test_exona_integration),
``PollPolicy`` field validation (test_engine_policy), and ``batch_scans``' refusals of
an empty list, concurrency 0, a missing field or a CSV without a column.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import respx
from prefect import flow
from pydantic import BaseModel, ValidationError

from flows.batch_scans import batch_scans
from flows.execution_batch import execution_batch
from flows.generation_grid import generation_grid
from flows.generic_jobs import generic_jobs, simulator_generic_api
from flows.scenario_sweep import scenario_sweep
from prefect_pollers import (
    AuthenticationError,
    BadRequestError,
    ExonaCredentials,
    JobApiCredentials,
    JobRef,
    JobState,
    PollerError,
    PollPolicy,
    TwynCredentials,
    submit_job,
    wait_for_job,
)
from prefect_pollers.batch import BatchItem, run_batch
from prefect_pollers.client import shared_client
from prefect_pollers.engine import (
    JobNotFoundError,
    MalformedResponseError,
    RateLimitedError,
    ResultUnavailableError,
    TransientRequestError,
)
from prefect_pollers.testing.simulator import FaultRule, SimulatorConfig
from tests.constants import SIM_SCALE
from tests.providers import BY_NAME, PROVIDER_TABLE, Provider

MAYBE_CREATED = "may have been created"
TIMEOUT_S = 0.5  # a loopback answer: under load (a GC pause, a busy core) 0.2 s was seen to pass


PROVIDERS = PROVIDER_TABLE


def block(provider: Provider, base_url: str, key: str = "sim-key") -> JobApiCredentials:
    return provider.block(base_url, key, policy_scale=SIM_SCALE, timeout_s=TIMEOUT_S)


def configure(sim, *faults: FaultRule, **fields: Any) -> None:
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=5, faults=list(faults), **fields)


def counters(sim, provider: Provider) -> dict[str, Any]:
    return sim.state.stats()[provider.name]


def assert_names_where(
    exc: PollerError, provider: str, path: str, job_id: str | None, http_status: int | None
) -> None:
    """The message names the provider, the job (if any), the path and the HTTP status."""
    text = str(exc)
    assert f"provider={provider}" in text, text
    assert f"path={path}" in text, text
    assert (exc.provider, exc.path, exc.job_id, exc.http_status) == (
        provider,
        path,
        job_id,
        http_status,
    ), text
    if job_id is not None:
        assert f"job={job_id}" in text, text
    else:
        assert "job=" not in text, text
    if http_status is not None:
        assert f"http={http_status}" in text, text
    else:
        assert "http=" not in text, text


def url_path(creds: JobApiCredentials, relative: str) -> str:
    return urlsplit(creds.base_url).path.rstrip("/") + "/" + relative


def submit_path(creds: JobApiCredentials, request: Any) -> str:
    return creds.contract().submit_request(creds.parse_request(request))[1]


def status_path(creds: JobApiCredentials, ref: JobRef) -> str:
    contract = creds.contract()
    return contract.job_path(contract.status, ref.job_id, ref.context)


# -- faults and documented errors, route by route ------------------------------------------

# kind -> (error type, HTTP status the message names, whether the job may have been created)
SUBMIT_FAULTS: dict[str, tuple[type[PollerError], int | None, bool]] = {
    "http_500": (TransientRequestError, 500, True),
    # A 502/503 may come from a proxy whose upstream created the job: no seed provider
    # declares otherwise (JobApiContract.submit_not_created_statuses).
    "http_502": (TransientRequestError, 502, True),
    "http_503": (TransientRequestError, 503, True),
    "reset": (TransientRequestError, None, True),
    "reset_after_create": (TransientRequestError, None, True),
    "slow": (TransientRequestError, None, True),
    "burst_429": (RateLimitedError, 429, False),
    "malformed_json": (MalformedResponseError, 200, True),
    "html": (TransientRequestError, 502, True),
    "empty": (MalformedResponseError, 200, True),
}
RESULT_FAULTS: dict[str, tuple[type[PollerError], int | None]] = {
    "http_500": (TransientRequestError, 500),
    "http_502": (TransientRequestError, 502),
    "http_503": (TransientRequestError, 503),
    "reset": (TransientRequestError, None),
    "slow": (TransientRequestError, None),
    "burst_429": (RateLimitedError, 429),
    "malformed_json": (MalformedResponseError, 200),
    "html": (TransientRequestError, 502),
    "empty": (MalformedResponseError, 200),
}
# The malformed status bodies (malformed_json, empty, html, missing_field, mistyped_field)
# are in test_blocks_on_simulator, through a whole wait.
STATUS_FAULTS = {
    k: v for k, v in RESULT_FAULTS.items() if k not in ("malformed_json", "empty", "html")
}


def fault(kind: str, route: str, provider: str, **trigger: int) -> FaultRule:
    return FaultRule(
        provider=provider,
        route=route,
        kind=kind,
        delay_s=2 * TIMEOUT_S,
        retry_after=2.0 if kind.startswith("http_") else None,
        **(trigger or {"first": 1}),
    )


@pytest.mark.parametrize("kind", SUBMIT_FAULTS)
@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
async def test_submit_faults_are_typed_and_say_whether_the_job_may_exist(sim, provider, kind):
    # Every attempt fails: the client retries what surely created nothing, then gives up.
    configure(sim, fault(kind, "submit", provider.name, every=1))
    creds = block(provider, sim.base_url(provider.name))
    error_type, http_status, maybe_created = SUBMIT_FAULTS[kind]
    with pytest.raises(error_type) as info:
        await shared_client(creds).submit(provider.ok, idempotency_key="key-1")
    path = url_path(creds, submit_path(creds, provider.ok))
    assert_names_where(info.value, provider.name, path, None, http_status)
    assert (MAYBE_CREATED in str(info.value)) is maybe_created
    if maybe_created:
        assert "'key-1'" in str(info.value)  # the key to look the job up by
    if kind != "slow":  # whether the provider goes on after the client gave up is its own
        assert counters(sim, provider)["submits"] == (kind == "reset_after_create")


@pytest.mark.parametrize("kind", [*STATUS_FAULTS, "unauthorized", "unknown_job"])
@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
async def test_status_faults_and_errors_are_typed_and_name_the_job(sim, provider, kind):
    configure(sim)
    creds = block(provider, sim.base_url(provider.name))
    ref = await shared_client(creds).submit(provider.ok)
    if kind == "unknown_job":
        ref = ref.model_copy(update={"job_id": ref.job_id[:-4] + "0000"})
        error_type, http_status = JobNotFoundError, 404
    elif kind == "unauthorized":
        creds = block(provider, sim.base_url(provider.name), key="revoked-key")
        error_type, http_status = AuthenticationError, 401
    else:
        configure(sim, fault(kind, "status", provider.name))
        error_type, http_status = STATUS_FAULTS[kind]
    with pytest.raises(error_type) as info:
        await shared_client(creds).poll(ref)
    assert_names_where(
        info.value, provider.name, url_path(creds, status_path(creds, ref)), ref.job_id, http_status
    )
    assert MAYBE_CREATED not in str(info.value)


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
async def test_an_unknown_status_is_running_not_an_error(sim, provider):
    configure(sim, fault("unknown_status", "status", provider.name))
    creds = block(provider, sim.base_url(provider.name))
    status = await shared_client(creds).poll(await shared_client(creds).submit(provider.ok))
    assert (status.state, status.recognized, status.raw_status) == (
        JobState.RUNNING,
        False,
        "REBALANCING",
    )


RESULT_PROVIDERS = [p for p in PROVIDERS if p.result_route]


@pytest.mark.parametrize("kind", [*RESULT_FAULTS, "not_completed"])
@pytest.mark.parametrize("provider", RESULT_PROVIDERS, ids=lambda p: p.name)
async def test_result_faults_and_errors_are_typed_and_name_the_job(sim, provider, kind):
    configure(
        sim,
        **(
            {"modelroute_duration": (600, 600), "generic_duration": (600, 600)}
            if kind == "not_completed"
            else {}
        ),
    )
    creds = block(provider, sim.base_url(provider.name))
    ref = await shared_client(creds).submit(provider.ok)
    if kind == "not_completed":  # the documented 409 of a result asked for too early
        status = (await shared_client(creds).poll(ref)).model_copy(
            update={"state": JobState.SUCCEEDED}
        )
        error_type, http_status = BadRequestError, 409
    else:
        status = await shared_client(creds).wait(ref)
        error_type, http_status = RESULT_FAULTS[kind]
        if issubclass(error_type, TransientRequestError):  # every attempt fails: after a few
            error_type = ResultUnavailableError
            configure(sim, fault(kind, "result", provider.name, every=1))
        else:
            configure(sim, fault(kind, "result", provider.name))
    with pytest.raises(error_type) as info:
        await shared_client(creds).fetch_result(ref, status)
    result_path = {
        "modelroute": f"executions/{ref.job_id}/result",
        "generic": f"tasks/{ref.job_id}/output",
    }[provider.name]
    assert_names_where(
        info.value, provider.name, url_path(creds, result_path), ref.job_id, http_status
    )


# -- refused credentials and requests: one request, even through the retrying tasks --------


@flow
async def submit_flow(credentials: JobApiCredentials, request: Any) -> JobRef:
    return await submit_job(credentials, request, idempotency_key=f"refused-{uuid.uuid4()}")


@flow
async def wait_flow(credentials: JobApiCredentials, job: JobRef) -> BaseModel:
    return await wait_for_job(credentials, job)


SIM_REFUSALS = [
    (p, kind) for p in PROVIDERS for kind in ("401", "422") if p.name != "exona"
]  # Exona's are in test_exona_integration


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    "provider, kind", SIM_REFUSALS, ids=[f"{p.name}-{k}" for p, k in SIM_REFUSALS]
)
async def test_submit_task_refused_by_the_simulator_fails_after_one_request(sim, provider, kind):
    configure(sim)
    key = "wrong-key" if kind == "401" else "sim-key"
    creds = block(provider, sim.base_url(provider.name), key=key)
    request = provider.ok if kind == "401" else provider.refused
    error_type = AuthenticationError if kind == "401" else BadRequestError
    with pytest.raises(error_type) as info:
        await submit_flow(creds, request)
    stats = counters(sim, provider)
    assert stats[f"http_{kind}"] == 1 and stats["submits"] == 0
    path = url_path(creds, submit_path(creds, provider.ok))
    assert_names_where(info.value, provider.name, path, None, int(kind))


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
async def test_wait_task_with_revoked_key_fails_after_one_poll(sim, provider):
    configure(sim)
    ref = await shared_client(block(provider, sim.base_url(provider.name))).submit(provider.ok)
    revoked = block(provider, sim.base_url(provider.name), key="revoked-key")
    with pytest.raises(AuthenticationError) as info:
        await wait_flow(revoked, ref)
    stats = counters(sim, provider)
    assert stats["http_401"] == 1 and stats["status_calls"] == 0
    assert_names_where(
        info.value, provider.name, url_path(revoked, status_path(revoked, ref)), ref.job_id, 401
    )


PROVIDER_URL = "https://provider.test/v1"
RESPX_REFUSALS = [(p, status) for p in PROVIDERS for status in (403, 400)]


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    "provider, status", RESPX_REFUSALS, ids=[f"{p.name}-{s}" for p, s in RESPX_REFUSALS]
)
async def test_submit_task_refused_with_403_or_400_fails_after_one_request(provider, status):
    creds = block(provider, PROVIDER_URL)
    path = url_path(creds, submit_path(creds, provider.ok))
    body = {
        "error": {
            "code": "forbidden" if status == 403 else "bad_request",
            "message": "refused by the provider",
        }
    }
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(f"https://provider.test{path}").mock(
            return_value=httpx.Response(status, json=body)
        )
        mock.route().pass_through()  # the Prefect API
        error_type = AuthenticationError if status == 403 else BadRequestError
        with pytest.raises(error_type) as info:
            await submit_flow(creds, provider.ok)
    assert route.call_count == 1
    assert_names_where(info.value, provider.name, path, None, status)
    assert "refused by the provider" in str(info.value)


@pytest.mark.usefixtures("prefect_harness")
async def test_submit_task_under_a_429_storm_posts_at_most_four_times():
    """One retry layer: the client's schedule, not the client's inside Prefect's retries."""
    provider = BY_NAME["exona"]
    creds = block(provider, PROVIDER_URL)
    path = url_path(creds, submit_path(creds, provider.ok))
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(f"https://provider.test{path}").mock(
            return_value=httpx.Response(429, text="slow down", headers={"Retry-After": "0"})
        )
        mock.route().pass_through()  # the Prefect API
        with pytest.raises(RateLimitedError) as info:
            await submit_flow(creds, provider.ok)
    assert route.call_count == 4
    assert "key=refused-" in str(info.value) and info.value.may_have_created is False


async def test_submit_task_under_a_503_posts_once_and_says_the_job_may_exist():
    """A 503 may come from a proxy whose upstream created the job: never sent again."""
    provider = BY_NAME["exona"]
    creds = block(provider, PROVIDER_URL)
    path = url_path(creds, submit_path(creds, provider.ok))
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(f"https://provider.test{path}").mock(
            return_value=httpx.Response(503, text="overloaded")
        )
        mock.route().pass_through()  # the Prefect API
        with pytest.raises(TransientRequestError) as info:
            await submit_flow(creds, provider.ok)
    assert route.call_count == 1
    assert info.value.may_have_created is True and "prefect-pollers ledger show" in str(info.value)


@pytest.mark.usefixtures("prefect_harness")
async def test_a_batch_with_one_invalid_row_names_it_and_submits_nothing(sim, tmp_path):
    configure(sim)
    csv_file = tmp_path / "three.csv"
    csv_file.write_text(
        "company_name,company_website\n"
        "Acme AI Ltd,https://acme.ai\n"
        "No Site Ltd,\n"
        "Beta Corp,https://beta.example\n"
    )
    creds = block(BY_NAME["exona"], sim.base_url("exona"))
    with pytest.raises(BadRequestError) as info:
        await batch_scans(csv_path=str(csv_file), credentials=creds)
    text = str(info.value)
    assert "item 1 ('No Site Ltd', " in text and f"{csv_file}, line 3" in text, text
    assert "company_website: Field required" in text and "nothing was submitted" in text
    assert "Acme" not in text and counters(sim, BY_NAME["exona"])["submits"] == 0


# -- invalid policies and parameters: refused before anything is submitted ------------------


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p.invalid], ids=lambda p: p.name)
async def test_invalid_request_is_refused_before_any_request(sim, provider):
    configure(sim)
    creds = block(provider, sim.base_url(provider.name))
    with pytest.raises(BadRequestError, match=provider.invalid_field) as info:
        await shared_client(creds).submit(provider.invalid)
    assert f"invalid {provider.name} request" in str(info.value)
    assert counters(sim, provider)["submits"] == 0
    assert sum(sim.state.providers[provider.name].stats.responses.values()) == 0  # no request


ACME = {"company_name": "Acme AI Ltd", "company_website": "https://acme.ai"}


def _flows(sim) -> dict[str, Callable[..., Any]]:
    def creds(name: str) -> JobApiCredentials:
        return block(BY_NAME[name], sim.base_url(name))

    return {
        "batch_scans": lambda **kw: batch_scans(credentials=creds("exona"), **kw),
        "scenario_sweep": lambda **kw: scenario_sweep(credentials=creds("twyn"), **kw),
        "generation_grid": lambda **kw: generation_grid(credentials=creds("apixo"), **kw),
        "execution_batch": lambda **kw: execution_batch(credentials=creds("modelroute"), **kw),
        "generic_jobs": lambda **kw: generic_jobs(api=creds("generic"), **kw),
    }


INVALID_RUNS = [
    # a deployment's parameters come as JSON: a policy dict is validated before any submit
    (
        "batch_scans",
        {"companies": [ACME], "policy": {"interval": -5}},
        "policy.interval: Input should be greater than 0",
    ),
    (
        "batch_scans",
        {"companies": [ACME], "policy": {"initial_delay": 60, "deadline": 30}},
        "must be after the first poll",
    ),
    (
        "batch_scans",
        {"companies": [ACME], "policy": {"interval": 5, "max_interval": 1}},
        "below interval",
    ),
    (
        "batch_scans",
        {"companies": [ACME], "policy": {"intervall": 5}},
        "policy.intervall: Extra inputs are not permitted",
    ),
    (
        "batch_scans",
        {"companies": [{**ACME, "max_age_days": -1}]},
        "max_age_days: Input should be greater than or equal to 0",
    ),
    (
        "scenario_sweep",
        {"scenarios": ["heatwave"], "concurrency": 0},
        "concurrency must be at least 1, got 0",
    ),
    ("scenario_sweep", {"scenarios": []}, "the batch is empty"),
    (
        "scenario_sweep",
        {"scenarios": ["heatwave"], "grid": {"days": []}},
        r"grid parameter\(s\) with no values: days",
    ),
    ("scenario_sweep", {"scenarios": ["heatwave", ""]}, "invalid twyn request: scenario:"),
    ("generation_grid", {"prompts": [], "models": ["flux-2"]}, "at least one prompt"),
    (
        "generation_grid",
        {"prompts": ["a fox"], "models": ["flux-2", ""]},
        "invalid apixo request: model:",
    ),
    (
        "generation_grid",
        {"prompts": ["a fox", " "], "models": ["flux-2"]},
        "input.prompt must be a non-empty string",
    ),
    ("execution_batch", {"executions": []}, "the batch is empty"),
    (
        "execution_batch",
        {"executions": [{"model": "m", "input": {}}], "concurrency": -1},
        "concurrency must be at least 1, got -1",
    ),
    (
        "execution_batch",
        {"executions": [{"model": "m", "input": {}}, {"input": {}}]},
        "invalid modelroute request: model: Field required",
    ),
    (
        "generic_jobs",
        {"jobs": [{"kind": "render", "params": {}}], "concurrency": 0},
        "concurrency must be at least 1",
    ),
    ("generic_jobs", {"jobs": []}, "the batch is empty"),
]


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    "name, kwargs, message",
    INVALID_RUNS,
    ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(INVALID_RUNS)],
)
async def test_example_flows_refuse_bad_parameters_before_submitting(sim, name, kwargs, message):
    configure(sim)
    with pytest.raises(Exception, match=message):
        await _flows(sim)[name](**kwargs)
    assert all(s["submits"] == 0 and s["status_calls"] == 0 for s in sim.state.stats().values())


@pytest.mark.usefixtures("prefect_harness")
async def test_run_batch_refuses_duplicate_keys_and_an_unknown_mode_before_submitting(sim):
    configure(sim)
    creds = block(BY_NAME["exona"], sim.base_url("exona"))
    twice = [
        BatchItem(label="a", key="same", request=ACME),
        BatchItem(label="b", key="same", request=ACME),
    ]

    @flow
    async def batch(items: list[BatchItem], mode: str = "per-job") -> Any:
        return await run_batch(creds, items, task_runs=mode)

    with pytest.raises(ValueError, match="duplicate idempotency keys in the batch: same"):
        await batch(twice)
    with pytest.raises(ValueError, match="task_runs must be"):
        await batch(twice[:1], mode="threads")
    assert counters(sim, BY_NAME["exona"])["submits"] == 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ExonaCredentials(api_key="k", policy_scale=0), "policy_scale"),
        (lambda: ExonaCredentials(api_key="k", timeout_s=-1), "timeout_s"),
        (lambda: TwynCredentials(api_key="k", timeout_s=0), "timeout_s"),
        (lambda: simulator_generic_api("https://x.test", "k", policy={"interval": -1}), "interval"),
        (
            lambda: simulator_generic_api(
                "https://x.test", "k", policy={"initial_delay": 10, "deadline": 5}
            ),
            "must be after the first poll",
        ),
        (lambda: PollPolicy().scaled(0), "scale factor must be positive"),
        (lambda: PollPolicy().scaled(-0.5), "scale factor must be positive"),
        (lambda: PollPolicy(interval=5).with_(deadline=-1), "deadline"),
    ],
)
def test_invalid_blocks_and_policies_are_refused_with_the_field_named(make, message):
    with pytest.raises((ValidationError, ValueError), match=message):
        make()
