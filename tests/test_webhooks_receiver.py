"""The receiver refuses every bad callback with a 4xx, logs no secret, and wakes no wait."""

import asyncio
import json
import logging
import secrets
import tempfile
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import standardwebhooks

from prefect_pollers import ApixoCredentials, HttpJobApi
from prefect_pollers.engine import CallbackBinding, JobRef
from prefect_pollers.ledger.replays import LedgerReplays
from prefect_pollers.providers.callback_urls import capability_token
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import CallbackInbox

FLOW_RUN = "0b6a1f8e-8a53-4c1e-9f55-1f0d8a2b7c11"
CAPABILITY_SECRET = secrets.token_urlsafe(32)
SIGNING_SECRET = "whsec_" + "dGVzdC1zaWduaW5nLXNlY3JldC1mb3ItcmVjZWl2ZXI="
APIXO = ApixoCredentials(
    api_key="k",
    base_url="http://127.0.0.1:9/apixo",
    callback_base_url="https://hooks.example.com",
    webhook_secret=CAPABILITY_SECRET,
)
GENERIC = HttpJobApi(
    api_name="render",
    api_key="k",
    base_url="http://127.0.0.1:9/render",
    callback_base_url="https://hooks.example.com",
    webhook_secret=SIGNING_SECRET,
    callback_url_field="webhook",
    callback_job_id_field="job.id",
)
NONCE = "n0nce-for-the-waiting-job"
TOKEN = capability_token(CAPABILITY_SECRET, "apixo", FLOW_RUN, NONCE)
APIXO_BODY = json.dumps({"taskId": "task_1", "state": "success", "resultJson": "{}"}).encode()
GENERIC_BODY = json.dumps({"job": {"id": "job_1", "status": "succeeded"}}).encode()


def signed(body: bytes, *, msg_id: str = "msg_1", at: datetime | None = None) -> dict[str, str]:
    stamp = at or datetime.now(timezone.utc)
    signature = standardwebhooks.Webhook(SIGNING_SECRET).sign(msg_id, stamp, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def fresh_replays() -> LedgerReplays:
    """A replay memory of its own (the ids and bodies here repeat from test to test)."""
    return LedgerReplays("sqlite+aiosqlite:///" + tempfile.mkdtemp() + "/ledger.db")


class Harness:
    """A receiver app with one waiting job per provider."""

    def __init__(self) -> None:
        self.inbox = CallbackInbox()
        self.app = create_webhook_app(
            [APIXO, GENERIC], inbox=self.inbox, emit_events=False, replays=fresh_replays()
        )
        self.apixo_wait = self.inbox.register(
            JobRef(
                provider="apixo",
                job_id="task_1",
                callback=CallbackBinding(flow_run=FLOW_RUN, nonce=NONCE),
            )
        )
        self.generic_wait = self.inbox.register(
            JobRef(provider="render", job_id="job_1", callback=CallbackBinding(flow_run=FLOW_RUN))
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://r")

    def woken(self) -> int:
        return self.apixo_wait.count + self.generic_wait.count


APIXO_URL = f"/hooks/apixo/{FLOW_RUN}/{TOKEN}"
GENERIC_URL = f"/hooks/render/{FLOW_RUN}"


def ago(minutes: float) -> datetime:
    """Now plus ``minutes`` (headers are signed when a test runs, not when collected)."""
    return datetime.now(timezone.utc) + timedelta(minutes=minutes)


NOT_JSON = b"<html>not json</html>"

REJECTIONS = [
    # (case, url, headers, body, status, reason fragment)
    ("unknown provider", f"/hooks/exona/{FLOW_RUN}", {}, GENERIC_BODY, 404, "unknown callback"),
    (
        "flow run not a UUID",
        "/hooks/render/not-a-run",
        lambda: signed(GENERIC_BODY),
        GENERIC_BODY,
        404,
        "unknown callback",
    ),
    ("no token", f"/hooks/apixo/{FLOW_RUN}", {}, APIXO_BODY, 404, "unknown callback"),
    (
        "forged token",
        APIXO_URL[:-1] + ("A" if APIXO_URL[-1] != "A" else "B"),
        {},
        APIXO_BODY,
        404,
        "unknown callback token",
    ),
    (
        "token of another flow run",
        f"/hooks/apixo/{FLOW_RUN[:-1]}0/{TOKEN}",
        {},
        APIXO_BODY,
        404,
        "unknown callback token",
    ),
    (
        "token without a MAC",
        f"/hooks/apixo/{FLOW_RUN}/{NONCE}",
        {},
        APIXO_BODY,
        404,
        "unknown callback token",
    ),
    ("missing signature", GENERIC_URL, {}, GENERIC_BODY, 401, "missing signature headers"),
    (
        "bad signature",
        GENERIC_URL,
        lambda: {**signed(GENERIC_BODY), "webhook-signature": "v1," + "A" * 43 + "="},
        GENERIC_BODY,
        401,
        "bad signature",
    ),
    (
        "malformed signature",
        GENERIC_URL,
        lambda: {**signed(GENERIC_BODY), "webhook-signature": "v1"},
        GENERIC_BODY,
        401,
        "bad signature",
    ),
    (
        "body changed after signing",
        GENERIC_URL,
        lambda: signed(GENERIC_BODY),
        GENERIC_BODY + b" ",
        401,
        "bad signature",
    ),
    (
        "timestamp too old",
        GENERIC_URL,
        lambda: signed(GENERIC_BODY, at=ago(-6)),
        GENERIC_BODY,
        401,
        "timestamp outside",
    ),
    (
        "timestamp too new",
        GENERIC_URL,
        lambda: signed(GENERIC_BODY, at=ago(6)),
        GENERIC_BODY,
        401,
        "timestamp outside",
    ),
    (
        "token on a signed scheme",
        GENERIC_URL + "/tok.en",
        lambda: signed(GENERIC_BODY),
        GENERIC_BODY,
        404,
        "unknown callback",
    ),
    ("not JSON", APIXO_URL, {}, NOT_JSON, 400, "not JSON"),
    ("JSON but not an object", APIXO_URL, {}, b"[1, 2]", 400, "not a JSON object"),
    ("names no job", APIXO_URL, {}, b'{"state": "success"}', 422, "names no job"),
    (
        "signed, names no job",
        GENERIC_URL,
        lambda: signed(b'{"job": {}}'),
        b'{"job": {}}',
        422,
        "names no job",
    ),
    ("body over the limit", APIXO_URL, {}, b'{"taskId": "' + b"x" * 300_000 + b'"}', 413, "over"),
]


@pytest.mark.parametrize(
    ("url", "headers", "body", "status", "reason"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
async def test_each_bad_callback_is_refused_and_wakes_nothing(
    url, headers, body, status, reason, caplog
):
    harness = Harness()
    headers = headers() if callable(headers) else headers
    with caplog.at_level(logging.WARNING, logger="prefect_pollers.webhooks"):
        async with harness.client() as client:
            response = await client.post(url, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    assert harness.woken() == 0
    assert harness.inbox.waiting() == 2
    logged = caplog.text
    assert "callback rejected" in logged
    for secret in (CAPABILITY_SECRET, SIGNING_SECRET, TOKEN, TOKEN.rsplit(".", 1)[1]):
        assert secret not in logged and secret not in response.text


async def test_a_valid_callback_wakes_its_wait_once_and_a_replay_is_refused():
    harness = Harness()
    async with harness.client() as client:
        first = await client.post(APIXO_URL, content=APIXO_BODY)
        replay = await client.post(APIXO_URL, content=APIXO_BODY)
        signed_headers = signed(GENERIC_BODY, msg_id="msg_7")
        generic = await client.post(GENERIC_URL, content=GENERIC_BODY, headers=signed_headers)
        generic_replay = await client.post(
            GENERIC_URL, content=GENERIC_BODY, headers=signed_headers
        )
    assert (first.status_code, replay.status_code) == (200, 409)
    assert (generic.status_code, generic_replay.status_code) == (200, 409)
    assert (harness.apixo_wait.count, harness.generic_wait.count) == (1, 1)
    stats = harness.app.state.receiver_stats.snapshot()
    assert stats["accepted"] == 2 and stats["deliveries"] == {"woken": 2}


async def test_a_valid_token_of_another_job_wakes_no_other_wait():
    harness = Harness()
    other = capability_token(CAPABILITY_SECRET, "apixo", FLOW_RUN, "another-nonce")
    async with harness.client() as client:
        response = await client.post(f"/hooks/apixo/{FLOW_RUN}/{other}", content=APIXO_BODY)
    assert response.status_code == 200  # authentic, but not this wait's token
    assert harness.apixo_wait.count == 0


async def test_a_callback_before_its_wait_is_kept_until_the_wait_registers():
    inbox = CallbackInbox()
    app = create_webhook_app([APIXO], inbox=inbox, emit_events=False, replays=fresh_replays())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        assert (await client.post(APIXO_URL, content=APIXO_BODY)).status_code == 200
    ref = JobRef(
        provider="apixo", job_id="task_1", callback=CallbackBinding(flow_run=FLOW_RUN, nonce=NONCE)
    )
    wakeup = inbox.register(ref)
    assert wakeup.is_set()


async def test_wakeup_from_another_thread_ends_a_pause():
    from prefect_pollers.engine import SystemClock

    inbox = CallbackInbox()
    ref = JobRef(provider="render", job_id="j", callback=CallbackBinding(flow_run="-"))
    wakeup = inbox.register(ref)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    loop.call_later(0.05, lambda: loop.run_in_executor(None, wakeup.set))
    assert await wakeup.pause(SystemClock(), 30)
    assert time.monotonic() - started < 5


def test_blocks_refuse_callbacks_without_a_usable_secret():
    with pytest.raises(ValueError, match="webhook_secret"):
        ApixoCredentials(api_key="k", base_url="http://x", callback_base_url="https://h")
    with pytest.raises(ValueError, match="at least 32"):
        ApixoCredentials(
            api_key="k", base_url="http://x", callback_base_url="https://h", webhook_secret="short"
        )
    with pytest.raises(ValueError, match="http"):
        ApixoCredentials(
            api_key="k", base_url="http://x", callback_base_url="h", webhook_secret="x" * 40
        )
    with pytest.raises(ValueError, match="dotted path"):
        HttpJobApi(
            api_key="k",
            base_url="http://x",
            callback_base_url="https://h",
            webhook_secret=SIGNING_SECRET,
            callback_url_field="a[0]",
        )
    assert "whsec" not in repr(GENERIC) and CAPABILITY_SECRET not in repr(APIXO)
