"""The client under every block: one retry layer for submits, the rate gate's deadline cap.

respx answers; time is virtual, so backoffs and rate-limit windows cost nothing.
"""

import httpx
import pytest
import respx

from prefect_pollers import ExonaCredentials, ModelRouteCredentials, PollPolicy, WaitTimeoutError
from prefect_pollers.client import SUBMIT_ATTEMPTS, shared_client
from prefect_pollers.engine import RateLimitedError, TransientRequestError
from prefect_pollers.testing import VirtualClock, use_clock

EXONA = "https://platform.exonalab.com/api/v1"
MODELROUTE = "https://api.modelroute.ai/v1"
REQUEST = {"company_name": "Acme AI Ltd", "company_website": "https://acme.ai"}


@pytest.fixture
def clock():
    with use_clock(VirtualClock()) as clock:
        yield clock


async def test_a_permanent_refusal_sends_at_most_four_posts_and_names_the_key(clock):
    # A refused connection surely created nothing (a 503 may have: see test_may_have_created).
    creds = ExonaCredentials(api_key="k")
    with respx.mock(base_url=EXONA) as api:
        route = api.post("/scans").mock(side_effect=httpx.ConnectError("refused"))
        started = clock.time()
        with pytest.raises(TransientRequestError) as info:
            await shared_client(creds).submit(REQUEST, idempotency_key="acme-2026-11")
    assert route.call_count == SUBMIT_ATTEMPTS == 4
    assert clock.time() - started == 1 + 2 + 4  # the one backoff schedule
    error = info.value
    assert error.may_have_created is False and error.retryable is True
    assert "key=acme-2026-11" in str(error) and error.idempotency_key == "acme-2026-11"


async def test_retry_after_sets_the_submit_backoff(clock):
    creds = ExonaCredentials(api_key="k")
    with respx.mock(base_url=EXONA) as api:
        route = api.post("/scans").mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "30"}),
                httpx.Response(201, json={"id": "scan_1", "status": "queued"}),
            ]
        )
        started = clock.time()
        ref = await shared_client(creds).submit(REQUEST)
    assert route.call_count == 2 and clock.time() - started == 30 and ref.job_id == "scan_1"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(500, text="boom"),
        httpx.Response(201, text="<html>"),
        httpx.TimeoutException("slow"),
        httpx.RemoteProtocolError("dropped"),
    ],
)
async def test_a_failure_that_may_have_created_the_job_is_sent_once(clock, answer):
    creds = ExonaCredentials(api_key="k")
    with respx.mock(base_url=EXONA) as api:
        route = api.post("/scans")
        if isinstance(answer, Exception):
            route.mock(side_effect=answer)
        else:
            route.mock(return_value=answer)
        with pytest.raises(Exception) as info:
            await shared_client(creds).submit(REQUEST, idempotency_key="acme-1")
    assert route.call_count == 1
    assert info.value.may_have_created is True
    assert "may have been created all the same (idempotency key 'acme-1')" in str(info.value)


async def test_a_refused_connection_is_retried_it_created_nothing(clock):
    creds = ExonaCredentials(api_key="k")
    with respx.mock(base_url=EXONA) as api:
        route = api.post("/scans").mock(
            side_effect=[
                httpx.ConnectError("refused"),
                httpx.Response(201, json={"id": "scan_1", "status": "queued"}),
            ]
        )
        ref = await shared_client(creds).submit(REQUEST)
    assert route.call_count == 2 and ref.job_id == "scan_1"


async def test_the_key_is_masked_in_errors_built_from_provider_messages(clock):
    creds = ExonaCredentials(api_key="exo_live_SENTINEL")
    with respx.mock(base_url=EXONA) as api:
        api.post("/scans").mock(
            return_value=httpx.Response(
                401, json={"error": {"code": "auth", "message": "bad key exo_live_SENTINEL"}}
            )
        )
        with pytest.raises(Exception) as info:
            await shared_client(creds).submit(REQUEST)
    assert "exo_live_SENTINEL" not in str(info.value) and "**********" in str(info.value)
    assert str(info.value) == info.value.args[0]  # built complete, never rewritten


async def test_the_rate_gate_does_not_hold_a_wait_past_its_deadline(clock):
    """A window that resets after the wait's deadline ends the wait at the deadline."""
    creds = ModelRouteCredentials(api_key="k")
    reset = clock.time() + 300  # the window reopens in 5 min; the wait has 60 s
    spent = {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    with respx.mock(base_url=MODELROUTE, assert_all_called=False) as api:
        api.post("/executions").mock(
            return_value=httpx.Response(201, json={"id": "e1", "status": "QUEUED"}, headers=spent)
        )
        status = api.get("/executions/e1").mock(
            return_value=httpx.Response(200, json={"status": "RUNNING"}, headers=spent)
        )
        client = shared_client(creds)
        ref = await client.submit({"model": "m", "input": {}})
        started = clock.time()
        with pytest.raises(WaitTimeoutError):
            await client.wait(ref, PollPolicy(interval=5, deadline=60))
    assert status.call_count == 0  # the window never reopened within the deadline
    assert clock.time() - started == pytest.approx(60)  # not the 300 s until the reset


async def test_a_held_poll_reports_a_rate_limit_without_sending(clock):
    creds = ModelRouteCredentials(api_key="k")
    client = shared_client(creds)
    client.gate.limited, client.gate.remaining = True, 0
    client.gate.reset_at = clock.time() + 100
    with respx.mock(base_url=MODELROUTE, assert_all_called=False) as api:
        route = api.get("/executions/e1")
        with pytest.raises(RateLimitedError) as info:
            await client.request("GET", "executions/e1", job_id="e1", until=clock.time() + 10)
    assert route.call_count == 0 and info.value.request_sent is False
    assert info.value.retry_after == pytest.approx(100, abs=0.1)


def test_every_pool_of_every_client_shares_one_tls_context() -> None:
    """Loading the CA bundle costs ~0.5 s of CPU: once per process, not once per pool."""
    from prefect_pollers import ExonaCredentials

    clients = [
        ExonaCredentials(api_key="k", base_url=f"https://{name}.example/v1").get_client()
        for name in ("a", "b")
    ]
    contexts = {
        id(pool._transport._pool._ssl_context)  # type: ignore[attr-defined]
        for client in clients
        for pool in client._pools
    }
    assert len(contexts) == 1 and sum(len(client._pools) for client in clients) > 2
