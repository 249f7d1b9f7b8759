"""Stale keep-alive connections are not errors (issue 19, point 4).

A server closes an idle keep-alive connection after its idle timeout (uvicorn, Node:
5 s) while the client's pool may still hold it: the next request on it is read by
no one and httpx raises "Server disconnected without sending a response". The
client keeps idle connections 2 s by default (below those timeouts) and re-sends a
request that failed so (on a reused connection, before any response) once, at once:
always a status request, a submit only where the provider deduplicates on its key.

The job API below sits behind httpcore's real connection pool, on a network in
memory: the server side speaks HTTP/1.1 through h11, so connection reuse, keep-alive
and httpx's errors are the real ones, with no port and no real time. One test runs the
same on a loopback socket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import h11
import httpcore
import httpx
import pytest

from prefect_pollers import HttpJobApi, PollPolicy
from prefect_pollers.client import JobApiClient
from prefect_pollers.engine import TransientRequestError
from prefect_pollers.testing import VirtualClock, use_clock


@dataclass
class Seen:
    """One request that reached the server on a connection (handled or dropped)."""

    connection: int
    method: str
    path: str
    headers: dict[str, str]
    dropped: bool


@dataclass
class JobApi:
    """A tiny job API: ``POST /jobs`` creates, ``GET /jobs/{id}`` reports, ``GET /ping``.

    Attributes:
        dedup_header: Header the API deduplicates submits on (None: it does not).
        polls_to_finish: Status calls a job answers ``running`` before ``succeeded``.
        drop: Decides, from (connection number, requests it already answered),
            whether the server drops this request unanswered (the connection closed).
    """

    dedup_header: str | None = None
    polls_to_finish: int = 2
    drop: Callable[[int, int], bool] = lambda _connection, answered: answered >= 1
    jobs: dict[str, int] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    def handle(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        """The answer to one request that the server reads."""
        if path.endswith("/ping"):
            return 200, {"ok": True}
        if method == "POST" and path.endswith("/jobs"):
            key = headers.get(self.dedup_header.lower()) if self.dedup_header else None
            if key is not None and key in self.by_key:
                return 200, {"id": self.by_key[key], "status": "running"}
            job_id = f"job-{len(self.jobs) + 1}"
            self.jobs[job_id] = 0
            if key is not None:
                self.by_key[key] = job_id
            return 201, {"id": job_id, "status": "running"}
        job_id = path.rsplit("/", 1)[-1]
        if method == "GET" and job_id in self.jobs:
            self.jobs[job_id] += 1
            done = self.jobs[job_id] > self.polls_to_finish
            return 200, {"id": job_id, "status": "succeeded" if done else "running"}
        return 404, {"message": "no such job"}

    def transport(self) -> httpx.AsyncHTTPTransport:
        """An httpx transport whose httpcore pool connects to this API in memory."""
        transport = httpx.AsyncHTTPTransport()
        # httpx takes no network backend: swap its pool for one on ours (same defaults).
        transport._pool = httpcore.AsyncConnectionPool(network_backend=_Backend(self))
        return transport

    def requests(self, method: str | None = None) -> list[Seen]:
        """The requests that reached the server (of ``method``, if given)."""
        return [s for s in self.seen if method is None or s.method == method]


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self, api: JobApi) -> None:
        self.api = api
        self.numbers = itertools.count(1)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.api.connections += 1
        return _Stream(self.api, next(self.numbers))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - not used
        raise httpcore.ConnectError("no unix sockets here")

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - no connect retries
        return None


class _Stream(httpcore.AsyncNetworkStream):
    """One connection: the client writes requests, the server's bytes are read back."""

    def __init__(self, api: JobApi, number: int) -> None:
        self.api = api
        self.number = number
        self.server = h11.Connection(h11.SERVER)
        self.outgoing = bytearray()
        self.closed_by_server = False
        self.answered = 0
        self.request: h11.Request | None = None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self.closed_by_server or not buffer:
            return  # the kernel takes the bytes; nobody reads them (b"" is no EOF here)
        self.server.receive_data(buffer)
        while True:
            event = self.server.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request = event
            elif isinstance(event, h11.EndOfMessage):
                self._answer()
                if self.closed_by_server:
                    return

    def _answer(self) -> None:
        request = self.request
        assert request is not None
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        dropped = self.api.drop(self.number, self.answered)
        self.api.seen.append(
            Seen(self.number, request.method.decode(), request.target.decode(), headers, dropped)
        )
        if dropped:
            self.closed_by_server = True
            return
        status, body = self.api.handle(request.method.decode(), request.target.decode(), headers)
        data = json.dumps(body).encode()
        response = h11.Response(
            status_code=status,
            headers=[("content-type", "application/json"), ("content-length", str(len(data)))],
        )
        for event in (response, h11.Data(data=data), h11.EndOfMessage()):
            self.outgoing += self.server.send(event) or b""
        self.server.start_next_cycle()
        self.answered += 1

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.outgoing:
            chunk = bytes(self.outgoing[:max_bytes])
            del self.outgoing[:max_bytes]
            return chunk
        return b""  # the server closed the connection

    async def aclose(self) -> None:
        return None

    def get_extra_info(self, info: str) -> typing.Any:
        # Not "readable" while idle: the server's close has not reached the client yet.
        return None


# -- the tests ---------------------------------------------------------------------------


@pytest.fixture
def clock():
    with use_clock(VirtualClock()) as clock:
        yield clock


def block(**fields: Any) -> HttpJobApi:
    return HttpJobApi(api_key="k", base_url="http://jobs.test/api", **fields)


async def test_a_poll_on_a_connection_the_server_closed_as_idle_succeeds(clock):
    api = JobApi()
    async with block().get_client(transport=api.transport()) as client:
        ref = await client.submit({"task": "x"}, idempotency_key="k-1")
        started = clock.time()
        status = await client.poll(ref)
    assert status.raw_status == "running" and clock.time() == started  # re-sent at once
    polls = api.requests("GET")
    assert [(s.connection, s.dropped) for s in polls] == [(1, True), (2, False)]


async def test_a_healthy_wait_meets_stale_connections_without_an_error(clock):
    # Every reused connection was closed by the server. Before the fix each poll met an
    # error (two in a row ended a healthy wait with the default budget); now none does,
    # so even a wait that tolerates no request error ends well, on its schedule.
    api = JobApi(polls_to_finish=4)
    policy = PollPolicy(initial_delay=6.0, interval=6.0, jitter=0.0, error_budget=0)
    async with block(policy=policy).get_client(transport=api.transport()) as client:
        ref = await client.submit({"task": "x"})
        status = await client.wait(ref)
    assert status.raw_status == "succeeded"
    assert clock.time() - ref.submitted_at.timestamp() == 5 * 6.0  # no error backoff
    assert sum(s.dropped for s in api.requests("GET")) == 5  # every poll met one


async def test_a_failure_on_a_new_connection_is_not_taken_for_a_stale_one(clock):
    # The server drops the first request of every connection: nothing was reused, so
    # it is an ordinary transient error, left to the wait's error budget and backoff.
    api = JobApi(drop=lambda _connection, answered: answered == 0)
    async with block().get_client(transport=api.transport()) as client:
        with pytest.raises(TransientRequestError) as info:
            await client.request("GET", "jobs/job-1", job_id="job-1", polling=True)
    assert info.value.stale_connection is False
    assert len(api.requests()) == 1


async def test_a_stale_submit_is_not_resent_where_the_provider_does_not_deduplicate(clock):
    api = JobApi()
    async with block().get_client(transport=api.transport()) as client:
        await client.request("GET", "ping")  # opens the connection the submit reuses
        with pytest.raises(TransientRequestError) as info:
            await client.submit({"task": "x"}, idempotency_key="acme-7")
    error = info.value
    assert error.stale_connection is True and error.may_have_created is True
    assert "prefect-pollers ledger show acme-7" in str(error)
    assert len(api.requests("POST")) == 1


async def test_a_stale_submit_is_resent_at_once_where_the_provider_deduplicates(clock):
    api = JobApi(dedup_header="Idempotency-Key")
    creds = block(deduplicates_submits=True)
    async with creds.get_client(transport=api.transport()) as client:
        await client.request("GET", "ping")
        started = clock.time()
        ref = await client.submit({"task": "x"}, idempotency_key="acme-8")
    posts = api.requests("POST")
    assert [(s.dropped, s.headers["idempotency-key"]) for s in posts] == [
        (True, "acme-8"),
        (False, "acme-8"),
    ]
    assert clock.time() == started and ref.job_id == "job-1" and list(api.jobs) == ["job-1"]


def test_idle_connections_are_kept_below_common_server_idle_timeouts():
    def expiry(client: JobApiClient[Any]) -> float:
        return client._pools[0]._transport._pool._keepalive_expiry  # type: ignore[attr-defined]

    assert expiry(block().get_client()) == 2.0
    assert expiry(block(keepalive_expiry_s=0.5).get_client()) == 0.5


async def test_a_real_socket_closed_by_the_server_is_not_an_error(clock):
    # The same race on loopback: the server reads the second request of a connection
    # and closes it unanswered.
    answered: dict[int, int] = {}
    numbers = itertools.count(1)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(numbers)
        answered[number] = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if answered[number]:
                    break  # idle-closed: read, never answered
                body = json.dumps({"id": "job-1", "status": "running"}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                answered[number] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        creds = HttpJobApi(api_key="k", base_url=f"http://127.0.0.1:{port}", timeout_s=5.0)
        async with creds.get_client() as client:
            ref = await client.submit({"task": "x"})
            status = await client.poll(ref)
    finally:
        server.close()
        await server.wait_closed()
    assert status.raw_status == "running"
    assert answered == {1: 1, 2: 1}
