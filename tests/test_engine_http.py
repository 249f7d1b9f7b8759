"""HTTP replies to typed errors and server hints (respx)."""

import asyncio
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest
import respx

from prefect_pollers.engine import (
    AuthenticationError,
    BadRequestError,
    JobNotFoundError,
    MalformedResponseError,
    RateLimitedError,
    ServerHints,
    TransientRequestError,
    VirtualClock,
    parse_retry_after,
    request_json,
)
from prefect_pollers.engine.ratelimit import RateLimitGate

UTC = timezone.utc  # datetime.UTC is Python 3.11+

BASE = "https://api.example.test/v1/"


def test_retry_after_seconds_and_decimals():
    assert parse_retry_after("120") == 120
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_retry_after_http_date():
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC).timestamp()
    header = format_datetime(datetime(2026, 11, 23, 12, 0, 45, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(header, now=now) == 45
    past = format_datetime(datetime(2026, 11, 23, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(past, now=now) == 0


async def call(route_response, *, polling=False, method="GET"):
    async with httpx.AsyncClient(base_url=BASE) as client:
        with respx.mock() as mock:
            mock.route(method=method, url=BASE + "jobs/7").mock(return_value=route_response)
            return await request_json(
                client, method, "jobs/7", provider="acme", job_id="7", polling=polling
            )


async def test_success_reads_body_and_hints():
    reply = await call(
        httpx.Response(
            200,
            json={"status": "ok"},
            headers={
                "Retry-After": "10",
                "X-RateLimit-Limit": "60",
                "X-RateLimit-Remaining": "57",
                "X-RateLimit-Reset": "1710924600",
            },
        )
    )
    assert reply.body == {"status": "ok"} and reply.path == "/v1/jobs/7"
    assert reply.hints == ServerHints(
        retry_after=10, ratelimit_limit=60, ratelimit_remaining=57, ratelimit_reset=1710924600
    )


@pytest.mark.parametrize(
    "status, error",
    [
        (401, AuthenticationError),
        (403, AuthenticationError),
        (400, BadRequestError),
        (422, BadRequestError),
        (409, BadRequestError),
        (429, RateLimitedError),
        (500, TransientRequestError),
        (502, TransientRequestError),
        (503, TransientRequestError),
    ],
)
async def test_http_errors_are_typed_and_name_provider_job_path_status(status, error):
    with pytest.raises(error) as info:
        await call(
            httpx.Response(
                status,
                json={"error": {"code": "X", "message": "nope"}},
                headers={"Retry-After": "3"},
            )
        )
    text = str(info.value)
    assert "provider=acme" in text and "job=7" in text and "path=/v1/jobs/7" in text
    assert f"http={status}" in text and "nope" in text
    if status in (429, 503):
        assert info.value.retry_after == 3


async def test_404_while_polling_is_job_not_found_else_bad_request():
    with pytest.raises(JobNotFoundError):
        await call(httpx.Response(404, json={"detail": "no such job"}), polling=True)
    with pytest.raises(BadRequestError):
        await call(httpx.Response(404, json={"detail": "no such route"}))


@pytest.mark.parametrize(
    "response, words",
    [
        (httpx.Response(200, content=b""), "empty body"),
        (httpx.Response(200, content=b'{"status": "ru'), "not JSON"),
        (httpx.Response(200, json=[1, 2]), "JSON list"),
        (
            httpx.Response(
                200, content=b"<html>oops</html>", headers={"content-type": "text/html"}
            ),
            "not JSON",
        ),
    ],
)
async def test_malformed_bodies_are_typed_errors_naming_url_and_status(response, words):
    with pytest.raises(MalformedResponseError) as info:
        await call(response)
    assert words in str(info.value) and "path=/v1/jobs/7" in str(info.value)
    assert "http=200" in str(info.value)


async def test_html_error_page_is_a_transient_error_with_its_text():
    with pytest.raises(TransientRequestError) as info:
        await call(httpx.Response(502, content=b"<html>Bad gateway</html>"))
    assert "Bad gateway" in str(info.value)


async def test_network_errors_are_transient_and_connect_errors_never_sent():
    async with httpx.AsyncClient(base_url=BASE) as client:
        with respx.mock() as mock:
            mock.get(BASE + "jobs/7").mock(side_effect=httpx.ConnectError("refused"))
            with pytest.raises(TransientRequestError) as info:
                await request_json(client, "GET", "jobs/7", provider="acme")
            assert info.value.request_sent is False
            mock.get(BASE + "jobs/7").mock(side_effect=httpx.ReadTimeout("slow"))
            with pytest.raises(TransientRequestError) as info:
                await request_json(client, "GET", "jobs/7", provider="acme")
            assert info.value.request_sent is True and "timed out" in str(info.value)


async def test_rate_limit_gate_holds_requests_until_reset():
    clock = VirtualClock(1000.0)
    gate = RateLimitGate(margin=0)
    await gate.acquire(clock)
    gate.release(ServerHints(ratelimit_limit=3, ratelimit_remaining=1, ratelimit_reset=1010.0))
    await gate.acquire(clock)  # the last one in this window
    gate.release(ServerHints(ratelimit_limit=3, ratelimit_remaining=0, ratelimit_reset=1010.0))
    await gate.acquire(clock)  # must wait for the reset
    assert clock.time() == 1010.0 and gate.held == 1
    assert gate.remaining == 2  # a fresh window of 3, one used


async def test_gate_never_overshoots_with_requests_in_flight():
    clock = VirtualClock(1000.0)
    gate = RateLimitGate(margin=0)
    gate.release(ServerHints(ratelimit_limit=5, ratelimit_remaining=5, ratelimit_reset=1060.0))
    for _ in range(5):
        await gate.acquire(clock)
    assert gate.remaining == 0 and gate.in_flight == 5
    # a late response still says 4 left: ours are in flight, so we do not believe it
    gate.release(ServerHints(ratelimit_limit=5, ratelimit_remaining=4, ratelimit_reset=1060.0))
    assert gate.remaining == 0


async def test_gate_is_transparent_without_rate_limit_headers():
    clock = VirtualClock(1000.0)
    gate = RateLimitGate()
    for _ in range(100):
        await gate.acquire(clock)
        gate.release(ServerHints(retry_after=5))
    assert clock.time() == 1000.0 and gate.held == 0


async def test_a_window_over_with_requests_in_flight_counts_them_in_the_next():
    clock = VirtualClock(1000.0)
    gate = RateLimitGate(margin=0)
    await gate.acquire(clock)
    gate.release(ServerHints(ratelimit_limit=3, ratelimit_remaining=2, ratelimit_reset=1010.0))
    for _ in range(2):  # sent in the first window; the server may count them in the next
        await gate.acquire(clock)
    clock.advance(10.0)
    await gate.acquire(clock)
    assert gate.remaining == 0  # 3 in the fresh window, 2 of them perhaps taken
    # their answers come from the old window: they did not reach the new one
    for _ in range(2):
        gate.release(ServerHints(ratelimit_limit=3, ratelimit_remaining=0, ratelimit_reset=1010.0))
    assert gate.remaining == 2
    for _ in range(2):
        await gate.acquire(clock)
    # a late answer must not open yet another window: the fourth waits for an answer
    fourth = asyncio.create_task(gate.acquire(clock))
    await asyncio.sleep(0.05)
    assert not fourth.done()
    gate.release(ServerHints(ratelimit_limit=3, ratelimit_remaining=0, ratelimit_reset=1020.0))
    assert await fourth and clock.time() == 1020.0
