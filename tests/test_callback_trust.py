"""Callbacks that cannot be forged or lost (issue 20 §3).

A callback event wakes a wait; only a status the receiver attested with the block's
key ends one. Replay memory is per provider and lives in the ledger (restarts,
replicas); capability tokens expire with their job's deadline; an early callback
keeps its place; slow clients are timed out on raw sockets.
"""

import asyncio
import contextlib
import json
import secrets
import socket
import time
import uuid
from datetime import datetime, timezone

import httpx
import pytest
import standardwebhooks
from prefect.events import Event

import prefect_pollers.events.jobs as events_module
import prefect_pollers.webhooks.subscription as subscription_module
from prefect_pollers import ApixoCredentials, HttpJobApi, PollPolicy
from prefect_pollers.engine import CallbackBinding, JobRef, JobState, JobStatus
from prefect_pollers.events.jobs import CALLBACK_EVENT
from prefect_pollers.ledger.replays import LedgerReplays
from prefect_pollers.ops.serving import BackgroundServer, bind_socket
from prefect_pollers.providers.callback_urls import capability_token
from prefect_pollers.providers.callbacks import TOKEN_GRACE_S
from prefect_pollers.testing.registry import GENERIC_SIMULATOR_API
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import CallbackInbox, Delivery
from prefect_pollers.webhooks.subscription import callback_wakeup, delivery_from_event
from tests.constants import SIM_SCALE

FLOW_RUN = "0b6a1f8e-8a53-4c1e-9f55-1f0d8a2b7c11"
CAPABILITY_SECRET = secrets.token_urlsafe(32)
SIGNING_SECRET = "whsec_" + "dHJ1c3QtdGVzdHMtc2lnbmluZy1zZWNyZXQ="


def signed_block(name="render", **fields):
    return HttpJobApi(
        api_name=name,
        api_key="k",
        base_url=f"http://127.0.0.1:9/{name}",
        callback_base_url="https://hooks.example.com",
        webhook_secret=SIGNING_SECRET,
        callback_url_field="webhook",
        callback_job_id_field="job.id",
        **fields,
    )


APIXO = ApixoCredentials(
    api_key="k",
    base_url="http://127.0.0.1:9/apixo",
    callback_base_url="https://hooks.example.com",
    webhook_secret=CAPABILITY_SECRET,
)


def signed(body: bytes, msg_id: str) -> dict[str, str]:
    stamp = datetime.now(timezone.utc)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(SIGNING_SECRET).sign(
            msg_id, stamp, body.decode()
        ),
    }


@pytest.fixture
def ledger_url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"


def client_of(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r")


def status(state: str, job_id: str = "job_1") -> JobStatus:
    return JobStatus(job_id=job_id, state=JobState(state), raw_status=state)


# -- 1. the waiting side takes a status only when trusted and attested -----------------


class FakeSubscriber:
    """Prefect's events subscriber, yielding given events (what anyone may emit)."""

    def __init__(self, events):
        self._events = events

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def _stream(self):
        for event in self._events:
            yield event
        await asyncio.Event().wait()

    def __aiter__(self):
        return self._stream()


def callback_event(
    provider: str, job_id: str, payload_status, attestation=None, delivery_id=None
) -> Event:
    return Event(
        event=CALLBACK_EVENT,
        resource={"prefect.resource.id": f"prefect-pollers.job.{provider}.{job_id}"},
        payload={
            "provider": provider,
            "job_id": job_id,
            "delivery_id": delivery_id or f"webhook-id:{uuid.uuid4()}",
            "nonce": None,
            "status": payload_status,
            "attestation": attestation,
        },
    )


def generic_sim_block(sim, **fields):
    with bind_socket("127.0.0.1", 0) as sock:  # nothing listens: real callbacks are lost
        port = sock.getsockname()[1]
    return HttpJobApi(
        **{
            **GENERIC_SIMULATOR_API,
            "policy": PollPolicy(interval=5.0, deadline=600.0, callback_safety_interval=30.0),
        },
        api_key="sim-key",
        base_url=sim.base_url("generic"),
        policy_scale=SIM_SCALE,
        callback_base_url=f"http://127.0.0.1:{port}",
        webhook_secret=SIGNING_SECRET,
        callback_url_field="task.callback_url",
        callback_job_id_field="task.uid",
        trust_signed_callbacks=True,
        **fields,
    )


async def wait_with_events(sim, monkeypatch, make_events):
    """Submit one generic job, feed ``make_events(ref)`` as the event stream, wait."""
    block = generic_sim_block(sim)
    inbox = CallbackInbox()
    async with block.get_client() as client:
        ref = await client.submit({"kind": "render", "params": {"n": 1}})
        events = make_events(block, ref)
        monkeypatch.setattr(
            subscription_module, "get_events_subscriber", lambda **_: FakeSubscriber(events)
        )
        async with callback_wakeup(ref, inbox, credentials=block) as wakeup:
            final = await client.wait(ref, wakeup=wakeup)
    return final, sim.stats()["generic"]["status_calls"]


async def test_a_forged_terminal_event_only_wakes_the_wait_which_polls_to_confirm(sim, monkeypatch):
    def forged(block, ref):
        fake = status("failed", ref.job_id).model_dump(mode="json")
        return [
            callback_event(ref.provider, ref.job_id, fake),  # no attestation
            callback_event(ref.provider, ref.job_id, fake, attestation="A" * 43),  # made up
        ]

    final, status_calls = await wait_with_events(sim, monkeypatch, forged)
    assert final.state is JobState.SUCCEEDED  # the status endpoint's truth, not the event's
    assert status_calls >= 1


async def test_an_attested_event_ends_a_trusting_wait_without_a_status_call(sim, monkeypatch):
    def attested(block, ref):
        delivery = Delivery(
            ref.provider, ref.job_id, "webhook-id:w1", None, status("succeeded", ref.job_id)
        ).attest(block.attestation_key())
        payload = delivery.status.model_dump(mode="json")
        return [
            callback_event(
                ref.provider, ref.job_id, payload, delivery.attestation, delivery.delivery_id
            )
        ]

    final, status_calls = await wait_with_events(sim, monkeypatch, attested)
    assert final.state is JobState.SUCCEEDED
    assert status_calls == 0


async def test_the_receivers_event_round_trip_is_trusted_only_by_a_trusting_block(
    monkeypatch, ledger_url
):
    emitted = []
    monkeypatch.setattr(events_module, "emit_event", lambda **event: emitted.append(event))
    block = signed_block(trust_signed_callbacks=True)
    app = create_webhook_app([block], inbox=CallbackInbox(), replays=LedgerReplays(ledger_url))
    body = json.dumps({"job": {"id": "job_1"}, "status": "failed"}).encode()
    async with client_of(app) as client:
        response = await client.post(
            f"/hooks/render/{FLOW_RUN}", content=body, headers=signed(body, "msg_rt")
        )
    assert response.status_code == 200
    payload = json.loads(json.dumps(emitted[0]["payload"]))  # as it comes back from the API
    assert SIGNING_SECRET not in json.dumps(payload)
    event = Event(event=CALLBACK_EVENT, resource=emitted[0]["resource"], payload=payload)
    ref = JobRef(provider="render", job_id="job_1", callback=CallbackBinding(flow_run=FLOW_RUN))
    for trust, expected in [
        (block.attestation_key(), JobState.FAILED),
        (None, None),  # a block that does not trust signed callbacks
        (b"the key of another secret", None),
    ]:
        inbox = CallbackInbox()
        wakeup = inbox.register(ref, trust)
        assert inbox.deliver(delivery_from_event(event)) == "woken"
        taken = wakeup.take()
        assert (taken.state if taken else None) is expected


async def test_an_attestation_binds_the_job_and_the_status():
    key = signed_block(trust_signed_callbacks=True).attestation_key()
    genuine = Delivery("render", "job_1", "webhook-id:x", None, status("succeeded")).attest(key)
    other_job = Delivery(
        "render", "job_2", "webhook-id:x", None, genuine.status, genuine.attestation
    )
    other_status = Delivery(
        "render", "job_1", "webhook-id:x", None, status("failed"), genuine.attestation
    )
    assert genuine.trusted_status(key) == genuine.status
    assert other_job.trusted_status(key) is None
    assert other_status.trusted_status(key) is None
    assert genuine.trusted_status(b"another key" * 3) is None
    assert "attestation" not in repr(genuine)


# -- 2. replay memory: per provider, in the ledger; tokens expire ------------------------


async def test_the_same_webhook_id_from_two_providers_is_accepted_by_each(ledger_url):
    render, paint = signed_block("render"), signed_block("paint")
    app = create_webhook_app(
        [render, paint], inbox=CallbackInbox(), emit_events=False, replays=LedgerReplays(ledger_url)
    )
    body = json.dumps({"job": {"id": "job_1"}}).encode()
    async with client_of(app) as client:
        answers = [
            (
                await client.post(
                    f"/hooks/{name}/{FLOW_RUN}", content=body, headers=signed(body, "msg_shared")
                )
            ).status_code
            for name in ("render", "paint", "render")
        ]
    assert answers == [200, 200, 409]


async def test_a_replay_is_refused_after_a_restart_and_by_another_replica(ledger_url):
    body = json.dumps({"job": {"id": "job_1"}}).encode()
    headers = signed(body, f"msg_{uuid.uuid4()}")
    answers = []
    for _ in range(2):  # a receiver, then a restarted one (or a replica) on the same ledger
        app = create_webhook_app(
            [signed_block()],
            inbox=CallbackInbox(),
            emit_events=False,
            replays=LedgerReplays(ledger_url),
        )
        async with client_of(app) as client:
            response = await client.post(f"/hooks/render/{FLOW_RUN}", content=body, headers=headers)
            answers.append(response.status_code)
    assert answers == [200, 409]


async def test_expired_claims_are_pruned(ledger_url):
    first, later = LedgerReplays(ledger_url), LedgerReplays(ledger_url)
    assert await first.claim("render", "webhook-id:old", time.time() - 1)
    assert not await first.claim("render", "webhook-id:old", time.time() + 60)
    assert await later.claim("render", "webhook-id:old", time.time() + 60)  # pruned first


async def test_a_capability_token_expires_with_its_jobs_deadline(ledger_url):
    app = create_webhook_app(
        [APIXO], inbox=CallbackInbox(), emit_events=False, replays=LedgerReplays(ledger_url)
    )
    body = json.dumps({"taskId": "task_1", "state": "success"}).encode()
    now = int(time.time())
    tokens = {
        "expired": capability_token(CAPABILITY_SECRET, "apixo", FLOW_RUN, "n1", now - 1),
        "live": capability_token(CAPABILITY_SECRET, "apixo", FLOW_RUN, "n2", now + 600),
        "expiry changed": capability_token(
            CAPABILITY_SECRET, "apixo", FLOW_RUN, "n3", now - 1
        ).replace(f".{now - 1}.", f".{now + 600}."),
    }
    async with client_of(app) as client:
        answers = {
            case: (await client.post(f"/hooks/apixo/{FLOW_RUN}/{token}", content=body)).status_code
            for case, token in tokens.items()
        }
    assert answers == {"expired": 410, "live": 200, "expiry changed": 404}
    request = APIXO.parse_request({"model": "nano-banana", "input": {"prompt": "p"}})
    deadline = APIXO.effective_policy(
        JobRef(provider="apixo", job_id="-", context={"model": "nano-banana"})
    ).deadline
    assert APIXO.callback_token_expiry(request, now=1000.0) == int(1000 + deadline + TOKEN_GRACE_S)


# -- 3. an early callback keeps its place -----------------------------------------------


async def test_an_early_callback_is_not_displaced_by_another_jobs_callback_naming_its_job():
    inbox = CallbackInbox()
    own = Delivery("apixo", "task_1", "sha256:a", nonce="nonce-of-task-1")
    intruder = Delivery("apixo", "task_1", "sha256:b", nonce="nonce-of-another-job")
    assert inbox.deliver(own) == "kept"
    assert inbox.deliver(intruder) == "kept"
    ref = JobRef(
        provider="apixo",
        job_id="task_1",
        callback=CallbackBinding(flow_run=FLOW_RUN, nonce="nonce-of-task-1"),
    )
    assert inbox.register(ref).is_set()


# -- 4. slow clients are timed out, on raw sockets --------------------------------------


@contextlib.contextmanager
def receiver(ledger_url, *, header_timeout_s, body_timeout_s):
    app = create_webhook_app(
        [APIXO],
        inbox=CallbackInbox(),
        emit_events=False,
        body_timeout_s=body_timeout_s,
        replays=LedgerReplays(ledger_url),
    )
    server = BackgroundServer(app, header_timeout_s=header_timeout_s)
    server.start()
    try:
        yield server.url.removeprefix("http://").split(":")
    finally:
        server.stop()


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent first."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def test_stalled_connections_are_closed_after_the_header_timeout(ledger_url):
    with receiver(ledger_url, header_timeout_s=0.5, body_timeout_s=30) as (host, port):
        stalled = []
        for i in range(100):
            sock = socket.create_connection((host, int(port)))
            if i % 2:  # half a request line; the other half sends nothing at all
                sock.sendall(b"POST /hooks/apixo/")
            stalled.append(sock)
        started = time.monotonic()
        try:
            assert all(closed_within(sock, 10)[0] for sock in stalled)
        finally:
            for sock in stalled:
                sock.close()
        assert time.monotonic() - started < 10


def test_a_slow_body_is_answered_408_and_closed(ledger_url):
    with receiver(ledger_url, header_timeout_s=30, body_timeout_s=0.5) as (host, port):
        sock = socket.create_connection((host, int(port)))
        try:
            sock.sendall(
                f"POST /hooks/apixo/{FLOW_RUN}/tok.en HTTP/1.1\r\nHost: r\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode()
                + b'{"taskId": '
            )
            closed, answer = closed_within(sock, 10)
        finally:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert closed
