"""Each provider's declarations against respx: paths, auth, status mapping, results."""

import json

import httpx
import pytest
import respx

from flows.generic_jobs import simulator_generic_api
from prefect_pollers import (
    ApixoCredentials,
    HttpJobApi,
    JobRef,
    JobState,
    ModelRouteCredentials,
    TwynCredentials,
)
from prefect_pollers.client import shared_client
from prefect_pollers.engine import MalformedResponseError
from prefect_pollers.testing import VirtualClock, use_clock

KEY = "SENTINEL-key-42"


@pytest.fixture(autouse=True)
def clock():
    with use_clock(VirtualClock()) as clock:
        yield clock


def ref(provider, job_id, **context):
    return JobRef(provider=provider, job_id=job_id, context=context)


@pytest.mark.parametrize(
    "raw, state",
    [
        ("PROCESSING_CONFIG", JobState.RUNNING),
        ("PROCESSING_SIMULATION", JobState.RUNNING),
        ("PROCESSING_ANALYSIS", JobState.RUNNING),
        ("COMPLETED_ANALYSIS", JobState.SUCCEEDED),
        ("FAILED", JobState.FAILED),
    ],
)
async def test_twyn_status_mapping_and_auth(raw, state):
    creds = TwynCredentials(api_key=KEY)
    with respx.mock(base_url="https://api.twyn.it/v1") as api:
        route = api.get("/simulations/sim_1").mock(
            return_value=httpx.Response(
                200, json={"simulation_id": "sim_1", "status": raw, "error_log": "boom"}
            )
        )
        status = await shared_client(creds).poll(ref("twyn", "sim_1"))
    assert route.calls.last.request.headers["X-API-Key"] == KEY
    assert status.state is state and status.phase == raw and status.recognized
    assert status.error_message == ("boom" if state is JobState.FAILED else None)


async def test_twyn_create_uses_the_overridable_path():
    creds = TwynCredentials(api_key=KEY, create_path="scenarios/run")
    with respx.mock(base_url="https://api.twyn.it/v1") as api:
        route = api.post("/scenarios/run").mock(
            return_value=httpx.Response(
                201, json={"simulation_id": "sim_9", "status": "PROCESSING_CONFIG"}
            )
        )
        job = await shared_client(creds).submit({"scenario": "heatwave", "config": {"days": 2}})
    assert job.job_id == "sim_9"
    assert json.loads(route.calls.last.request.content) == {
        "scenario": "heatwave",
        "config": {"days": 2},
    }


def test_twyn_policy_is_phase_aware_with_a_ten_minute_deadline():
    policy = TwynCredentials(api_key=KEY).default_policy(ref("twyn", "s"))
    assert policy.deadline == 600 and policy.min_interval >= 1
    assert policy.phase_quiet_periods == {
        "PROCESSING_CONFIG": 180,
        "PROCESSING_SIMULATION": 120,
        "PROCESSING_ANALYSIS": 60,
    }
    assert policy.phase_intervals["PROCESSING_ANALYSIS"] <= 5


async def test_apixo_paths_body_and_result_json():
    creds = ApixoCredentials(api_key=KEY, base_url="https://apixo.test/api/v1")
    data = {
        "taskId": "t1",
        "state": "success",
        "resultJson": json.dumps({"resultUrls": ["https://cdn.test/1.png"]}),
    }
    with respx.mock(base_url="https://apixo.test/api/v1") as api:
        submit = api.post("/generateTask/flux-2").mock(
            return_value=httpx.Response(
                200, json={"code": 200, "msg": "success", "data": {"taskId": "t1"}}
            )
        )
        api.get("/checkStatus/flux-2/t1").mock(
            return_value=httpx.Response(200, json={"code": 200, "data": data})
        )
        job = await shared_client(creds).submit(
            {
                "model": "flux-2",
                "input": {"prompt": "a fox"},
                "request_type": "callback",
                "callback_url": "http://127.0.0.1:9/hook",
            }
        )
        status = await shared_client(creds).poll(job)
        result = await shared_client(creds).fetch_result(job, status)
    body = json.loads(submit.calls.last.request.content)
    assert body == {
        "input": {"prompt": "a fox"},
        "request_type": "callback",
        "callback_url": "http://127.0.0.1:9/hook",
    }
    assert job.context == {"model": "flux-2"} and status.state is JobState.SUCCEEDED
    assert result.result_urls == ["https://cdn.test/1.png"]


async def test_apixo_failed_and_unreadable_result_json():
    creds = ApixoCredentials(api_key=KEY, base_url="https://apixo.test/api/v1")
    with respx.mock(base_url="https://apixo.test/api/v1") as api:
        api.get("/checkStatus/suno/t2").mock(
            return_value=httpx.Response(
                200,
                json={"data": {"state": "failed", "failCode": "QUOTA", "failMsg": "no credits"}},
            )
        )
        api.get("/checkStatus/suno/t3").mock(
            return_value=httpx.Response(
                200, json={"data": {"state": "success", "resultJson": "{not json"}}
            )
        )
        failed = await shared_client(creds).poll(ref("apixo", "t2", model="suno"))
        odd = await shared_client(creds).poll(ref("apixo", "t3", model="suno"))
        with pytest.raises(MalformedResponseError, match="resultJson"):
            await shared_client(creds).fetch_result(ref("apixo", "t3", model="suno"), odd)
    assert (failed.state, failed.error_code, failed.error_message) == (
        JobState.FAILED,
        "QUOTA",
        "no credits",
    )


def test_apixo_refuses_callback_without_url():
    from prefect_pollers import BadRequestError

    creds = ApixoCredentials(api_key=KEY, base_url="https://apixo.test")
    with pytest.raises(BadRequestError, match="callback_url"):
        creds.parse_request({"model": "suno", "input": {"prompt": "x"}, "request_type": "callback"})


@pytest.mark.parametrize(
    "raw, state",
    [
        ("QUEUED", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETED", JobState.SUCCEEDED),
        ("FAILED", JobState.FAILED),
        ("CANCELLED", JobState.CANCELLED),
        ("EXPIRED", JobState.EXPIRED),
    ],
)
async def test_modelroute_status_mapping(raw, state):
    creds = ModelRouteCredentials(api_key=KEY)
    with respx.mock(base_url="https://api.modelroute.ai/v1") as api:
        api.get("/executions/e1").mock(
            return_value=httpx.Response(
                200, json={"id": "e1", "status": raw, "error": {"code": "E", "message": "m"}}
            )
        )
        status = await shared_client(creds).poll(ref("modelroute", "e1"))
    assert status.state is state


async def test_modelroute_result_and_malformed_result():
    creds = ModelRouteCredentials(api_key=KEY)
    good = {
        "execution_id": "e1",
        "status": "COMPLETED",
        "output": {"images": []},
        "usage": {"input_tokens": 12, "output_tokens": 0},
        "cost": "0.040",
        "latency_ms": 8420,
    }
    with respx.mock(base_url="https://api.modelroute.ai/v1") as api:
        api.get("/executions/e1/result").mock(return_value=httpx.Response(200, json=good))
        api.get("/executions/e2/result").mock(
            return_value=httpx.Response(200, json={**good, "cost": "a lot"})
        )
        result = await shared_client(creds).fetch_result(ref("modelroute", "e1"), None)
        with pytest.raises(MalformedResponseError, match="cost"):
            await shared_client(creds).fetch_result(ref("modelroute", "e2"), None)
    assert str(result.cost) == "0.040" and result.usage.input_tokens == 12


async def test_modelroute_rate_limit_headers_hold_the_next_request(clock):
    creds = ModelRouteCredentials(api_key=KEY)
    reset = clock.time() + 30
    headers = {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    with respx.mock(base_url="https://api.modelroute.ai/v1") as api:
        api.get("/executions/e1").mock(
            return_value=httpx.Response(
                200, json={"id": "e1", "status": "RUNNING"}, headers=headers
            )
        )
        await shared_client(creds).poll(ref("modelroute", "e1"))
        before = clock.time()
        await shared_client(creds).poll(ref("modelroute", "e1"))
    assert clock.time() - before >= 30  # held until the reset, no 429 collected


async def test_http_job_api_declaration_maps_everything():
    api_block = simulator_generic_api("https://jobs.test/v2", KEY)
    with respx.mock(base_url="https://jobs.test/v2") as api:
        submit = api.post("/tasks").mock(
            return_value=httpx.Response(
                201, json={"task": {"uid": "t-1", "state": {"name": "QUEUED"}}}
            )
        )
        api.get("/tasks/t-1").mock(
            return_value=httpx.Response(
                200,
                json={
                    "task": {
                        "uid": "t-1",
                        "state": {"name": "ERROR", "reason": {"code": "OOM", "text": "out"}},
                    }
                },
            )
        )
        job = await shared_client(api_block).submit(
            {"kind": "render", "params": {"n": 1}, "ignored": 1}
        )
        status = await shared_client(api_block).poll(job)
    assert json.loads(submit.calls.last.request.content) == {
        "task": {"kind": "render", "params": {"n": 1}}
    }
    assert submit.calls.last.request.headers["X-Auth-Token"] == KEY
    assert (status.state, status.error_code, status.error_message) == (
        JobState.FAILED,
        "OOM",
        "out",
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"status_field": "a..b"}, "JMESPath"),
        ({"status_url": "tasks/latest"}, "job_id"),
        ({"succeeded": []}, "at least 1"),
        ({"api_name": "Bad Name"}, "pattern"),
    ],
)
def test_http_job_api_refuses_bad_declarations(fields, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        HttpJobApi(api_key=KEY, base_url="https://x.test", **fields)


def test_http_job_api_key_not_in_repr():
    block = simulator_generic_api("https://jobs.test/v2", KEY)
    assert KEY not in repr(block) and block.provider == "generic"
