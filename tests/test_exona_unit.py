"""The Exona block against respx: mapping, cache hits, errors, secrets."""

import logging

import httpx
import pytest
import respx

from prefect_pollers import (
    AuthenticationError,
    BadRequestError,
    ExonaCredentials,
    JobFailedError,
    JobState,
    PollPolicy,
    WaitTimeoutError,
)
from prefect_pollers.client import shared_client
from prefect_pollers.engine import MalformedResponseError
from prefect_pollers.providers import ExonaScanRequest, exona_policy
from prefect_pollers.testing import VirtualClock, use_clock

BASE = "https://platform.exonalab.com/api/v1"
KEY = "exo_live_SENTINEL_a1b2c3"
REQUEST = {"company_name": "Acme AI Ltd", "company_website": "https://acme.ai"}
RESULT = {"risk_assessment": {"overall_risk_level": "medium", "score": 52}, "sources": []}


@pytest.fixture
def creds():
    return ExonaCredentials(api_key=KEY)


@pytest.fixture
def clock():
    with use_clock(VirtualClock()) as clock:
        yield clock


@pytest.fixture
def api():
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def scan(status, **extra):
    return httpx.Response(
        200, json={"id": "scan_1", "status": status, **extra}, headers={"Retry-After": "10"}
    )


async def test_submit_sends_bearer_body_and_idempotency_key(creds, clock, api):
    route = api.post("/scans").mock(
        return_value=httpx.Response(201, json={"id": "scan_1", "status": "queued"})
    )
    ref = await shared_client(creds).submit(
        {**REQUEST, "max_age_days": 30}, idempotency_key="acme-1"
    )
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Idempotency-Key"] == "acme-1"
    assert httpx.Request("POST", "/", content=sent.content).read() and b'"max_age_days":30' in (
        sent.content.replace(b" ", b"")
    )
    assert (ref.provider, ref.job_id, ref.idempotency_key) == ("exona", "scan_1", "acme-1")
    assert ref.submitted_status is None
    assert ref.submitted_at.timestamp() == clock.time()


async def test_full_wait_maps_statuses_and_returns_typed_result(creds, clock, api):
    api.get("/scans/scan_1").mock(
        side_effect=[
            scan("queued"),
            scan("researching"),
            scan("analyzing"),
            scan("completed", result=RESULT),
        ]
    )
    api.post("/scans").mock(
        return_value=httpx.Response(201, json={"id": "scan_1", "status": "queued"})
    )
    ref = await shared_client(creds).submit(ExonaScanRequest(**REQUEST))
    start = clock.time()
    status = await shared_client(creds).wait(ref)
    result = await shared_client(creds).fetch_result(ref, status)
    assert status.state is JobState.SUCCEEDED
    assert result.overall_risk_level == "medium" and result.payload == RESULT
    assert not result.cached
    # initial delay 30 s, then Retry-After 10 s is the floor of the 5 s interactive interval
    assert clock.time() - start == 30 + 10 * 3


async def test_cache_hit_returns_at_once_without_a_poll(creds, clock, api):
    api.post("/scans").mock(
        return_value=httpx.Response(
            200, json={"id": "scan_9", "status": "completed", "cached": True, "result": RESULT}
        )
    )
    status_route = api.get("/scans/scan_9")
    ref = await shared_client(creds).submit(REQUEST)
    assert ref.submitted_status and ref.submitted_status.state is JobState.SUCCEEDED
    status = await shared_client(creds).wait(ref)
    result = await shared_client(creds).fetch_result(ref, status)
    assert result.cached and result.overall_risk_level == "medium"
    assert status_route.call_count == 0


async def test_failed_scan_raises_with_provider_code_and_message(creds, clock, api):
    api.get("/scans/scan_1").mock(
        return_value=scan(
            "failed", error={"code": "website_unreachable", "message": "DNS lookup failed"}
        )
    )
    api.post("/scans").mock(return_value=httpx.Response(201, json={"id": "scan_1"}))
    ref = await shared_client(creds).submit(REQUEST)
    with pytest.raises(JobFailedError) as info:
        await shared_client(creds).wait(ref)
    assert info.value.error_code == "website_unreachable"
    assert "DNS lookup failed" in str(info.value) and "scan_1" in str(info.value)


async def test_wrong_key_fails_at_once_after_one_request(creds, clock, api):
    route = api.post("/scans").mock(
        return_value=httpx.Response(
            401, json={"error": {"code": "unauthorized", "message": "Invalid API key"}}
        )
    )
    with pytest.raises(AuthenticationError) as info:
        await shared_client(creds).submit(REQUEST)
    assert route.call_count == 1 and "Invalid API key" in str(info.value)
    assert KEY not in str(info.value)


async def test_wrong_key_while_polling_is_not_retried(creds, clock, api):
    from prefect_pollers import JobRef

    route = api.get("/scans/scan_1").mock(return_value=httpx.Response(401, json={}))
    with pytest.raises(AuthenticationError):
        await shared_client(creds).wait(JobRef(provider="exona", job_id="scan_1"))
    assert route.call_count == 1


async def test_422_fails_at_once_with_the_provider_message(creds, clock, api):
    route = api.post("/scans").mock(
        return_value=httpx.Response(
            422,
            json={"error": {"code": "validation_error", "message": "company_website is not a URL"}},
        )
    )
    with pytest.raises(BadRequestError) as info:
        await shared_client(creds).submit(REQUEST)
    assert route.call_count == 1 and "company_website is not a URL" in str(info.value)


async def test_invalid_request_refused_before_anything_is_sent(creds, clock, api):
    route = api.post("/scans")
    with pytest.raises(BadRequestError) as info:
        await shared_client(creds).submit({"company_name": "", "max_age_days": -1})
    assert route.call_count == 0
    text = str(info.value)
    assert "company_name" in text and "company_website" in text and "max_age_days" in text


async def test_unknown_status_counts_as_running_and_warns_once(creds, clock, api, caplog):
    api.get("/scans/scan_1").mock(
        side_effect=[scan("rebalancing")] * 3 + [scan("completed", result=RESULT)]
    )
    api.post("/scans").mock(return_value=httpx.Response(201, json={"id": "scan_1"}))
    ref = await shared_client(creds).submit(REQUEST)
    with caplog.at_level(logging.WARNING, logger="prefect_pollers"):
        status = await shared_client(creds).wait(ref)
    assert status.state is JobState.SUCCEEDED
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rebalancing" in warnings[0]


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b""),
        httpx.Response(200, content=b"{not json"),
        httpx.Response(200, json={"id": "scan_1"}),
        httpx.Response(200, json={"id": "scan_1", "status": 3}),
    ],
)
async def test_malformed_status_bodies_are_typed_and_retried_within_budget(
    creds, clock, api, response
):
    route = api.get("/scans/scan_1").mock(return_value=response)
    api.post("/scans").mock(return_value=httpx.Response(201, json={"id": "scan_1"}))
    ref = await shared_client(creds).submit(REQUEST)
    from prefect_pollers import ProviderUnavailableError

    with pytest.raises(ProviderUnavailableError) as info:
        await shared_client(creds).wait(ref)
    assert route.call_count == 3  # the guide's "give up after 3 errors in a row"
    assert isinstance(info.value.__cause__, MalformedResponseError)
    assert "/api/v1/scans/scan_1" in str(info.value.__cause__)


async def test_submit_without_id_is_a_typed_error(creds, clock, api):
    api.post("/scans").mock(return_value=httpx.Response(201, json={"status": "queued"}))
    with pytest.raises(MalformedResponseError, match="no job id"):
        await shared_client(creds).submit(REQUEST)


async def test_429_waits_retry_after_then_continues(creds, clock, api):
    api.get("/scans/scan_1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "60"}, json={}),
            httpx.Response(429, json={}),  # no Retry-After: the guide's 60 s default
            scan("completed", result=RESULT),
        ]
    )
    api.post("/scans").mock(return_value=httpx.Response(201, json={"id": "scan_1"}))
    ref = await shared_client(creds).submit(REQUEST)
    start = clock.time()
    await shared_client(creds).wait(ref)
    assert clock.time() - start == 30 + 60 + 60


async def test_timeout_carries_last_status(creds, clock, api):
    api.get("/scans/scan_1").mock(return_value=scan("analyzing"))
    api.post("/scans").mock(return_value=httpx.Response(201, json={"id": "scan_1"}))
    ref = await shared_client(creds).submit(REQUEST)
    with pytest.raises(WaitTimeoutError) as info:
        await shared_client(creds).wait(ref, PollPolicy(interval=10, deadline=120))
    assert info.value.last_status.raw_status == "analyzing"
    assert clock.time() - ref.submitted_at.timestamp() == 120


def test_batch_presets_follow_the_guide():
    assert exona_policy(1).interval == 5
    assert exona_policy(20).interval == 15
    assert exona_policy(150).interval == 30


def test_key_never_in_repr_or_dump(creds):
    assert KEY not in repr(creds) and KEY not in str(creds)
    assert KEY not in creds.model_dump_json()


async def test_one_pooled_client_per_block_and_loop(creds, clock):
    assert shared_client(creds) is shared_client(creds)
    copy = ExonaCredentials(api_key=KEY)
    assert shared_client(copy) is shared_client(creds)
    other = ExonaCredentials(api_key="another", base_url="http://127.0.0.1:1/api/v1")
    assert shared_client(other) is not shared_client(creds)
    # everything that shapes the pool is in its key: a smaller pool is another pool
    smaller = ExonaCredentials(api_key=KEY, max_connections=5)
    assert shared_client(smaller) is not shared_client(creds)
    assert KEY not in repr(shared_client(creds)) and KEY not in str(creds.pool_key())


async def test_get_client_is_owned_by_the_caller_and_takes_a_transport(creds):
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers["Authorization"]))
        return httpx.Response(200, json={"id": "scan_9", "status": "queued"})

    async with creds.get_client(transport=httpx.MockTransport(answer)) as client:
        assert client is not shared_client(creds)
        ref = await client.submit(REQUEST)
    assert client.is_closed and ref.job_id == "scan_9"
    assert seen == [("POST", "/api/v1/scans", f"Bearer {KEY}")]
