"""Callbacks end waits: APIXO's capability URLs and every signed scheme, on the real simulator.

The simulator posts callbacks over loopback to a receiver served in this process;
the receiver wakes the wait through the inbox (no Prefect here: events off).
"""

import asyncio
import secrets
import tempfile
import time

import pytest

from prefect_pollers import (
    ApixoCredentials,
    BatchItem,
    HttpJobApi,
    OpenAIBatchCredentials,
    PollPolicy,
)
from prefect_pollers.batch.provider_batches import provider_batch_outcomes
from prefect_pollers.engine import JobState
from prefect_pollers.ledger import Ledger
from prefect_pollers.ledger.replays import LedgerReplays
from prefect_pollers.ops.serving import BackgroundServer, bind_socket
from prefect_pollers.providers.signatures import FAL, GITHUB, STRIPE
from prefect_pollers.testing.registry import GENERIC_SIMULATOR_API, provider_entry
from prefect_pollers.testing.simulator import SimulatorConfig
from prefect_pollers.testing.simulator.config import CallbackFault
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import INBOX, CallbackInbox
from tests.constants import SIM_SCALE

CAPABILITY_SECRET = secrets.token_urlsafe(32)
SIGNING_SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
SAFETY = 300.0  # simulated seconds: far longer than any job, so a poll means a lost callback


def apixo_block(sim, receiver_url, **fields):
    return ApixoCredentials(
        api_key="sim-key",
        base_url=sim.base_url("apixo"),
        policy_scale=SIM_SCALE,
        callback_base_url=receiver_url,
        webhook_secret=CAPABILITY_SECRET,
        **fields,
    )


def generic_block(sim, receiver_url, **fields):
    return HttpJobApi(
        **{
            **GENERIC_SIMULATOR_API,
            "policy": PollPolicy(interval=5.0, deadline=600.0, callback_safety_interval=SAFETY),
        },
        api_key="sim-key",
        base_url=sim.base_url("generic"),
        policy_scale=SIM_SCALE,
        callback_base_url=receiver_url,
        callback_url_field="task.callback_url",
        callback_job_id_field="task.uid",
        **{"webhook_secret": SIGNING_SECRET, **fields},
    )


APIXO_POLICY = PollPolicy(
    initial_delay=5, interval=3, deadline=600, callback_safety_interval=SAFETY
)


class Receiver:
    """A receiver for ``blocks`` served on loopback, delivering to its own inbox."""

    def __init__(self, url, *blocks, inbox=None):
        self.inbox = inbox or CallbackInbox()
        ledger = "sqlite+aiosqlite:///" + tempfile.mkdtemp() + "/ledger.db"
        self.app = create_webhook_app(
            blocks, inbox=self.inbox, emit_events=False, replays=LedgerReplays(ledger)
        )
        host, port = url.removeprefix("http://").split(":")
        self.server = BackgroundServer(self.app, host, int(port))

    @property
    def stats(self):
        return self.app.state.receiver_stats.snapshot()


@pytest.fixture
def receiver_url():
    """A free loopback URL for a receiver started later (its blocks need the URL)."""
    with bind_socket("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def run_jobs(block, inbox, requests, policy=None):
    """Submit every request and wait for each, woken through ``inbox``."""
    async with block.get_client() as client:

        async def one(request):
            ref = await client.submit(request)
            wakeup = inbox.register(ref, block.attestation_key())
            try:
                return ref, await client.wait(ref, policy, wakeup=wakeup)
            finally:
                inbox.unregister(ref, wakeup)

        return await asyncio.gather(*(one(r) for r in requests))


def served(url, *blocks):
    return served_on(url, None, *blocks)


def served_on(url, inbox, *blocks):
    """A receiver delivering to ``inbox`` (its own if None), started."""
    receiver = Receiver(url, *blocks, inbox=inbox)
    receiver.server.start()
    return receiver


def apixo_requests(n):
    return [
        {"model": "nano-banana", "input": {"prompt": f"fox {i}"}, "request_type": "callback"}
        for i in range(n)
    ]


async def test_apixo_callbacks_end_waits_with_one_status_call_each(sim, receiver_url):
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=3)
    block = apixo_block(sim, receiver_url)
    receiver = served(receiver_url, block)
    try:
        results = await run_jobs(block, receiver.inbox, apixo_requests(20), APIXO_POLICY)
    finally:
        receiver.server.stop()
    assert all(status.state is JobState.SUCCEEDED for _, status in results)
    assert all(ref.callback is not None and ref.callback.nonce for ref, _ in results)
    stats = sim.stats()["apixo"]
    assert stats["callbacks_sent"] == 20
    assert stats["status_calls"] == 20  # one confirming call per job, no safety poll
    assert receiver.stats["deliveries"] == {"woken": 20}


async def settled(sim, provider, posts):
    """The provider's stats once the simulator has had ``posts`` callbacks answered."""
    for _ in range(100):
        stats = sim.stats()[provider]
        if sum(stats["callback_responses"].values()) >= posts:
            return stats
        await asyncio.sleep(0.05)
    return stats


SHORT_SAFETY = 30.0  # simulated seconds: a lost callback is found by the first safety poll
FAULT_KINDS = ["lost", "duplicated", "delayed", "out_of_order", "early", "forged", "replayed"]


@pytest.mark.parametrize("provider", ["apixo", "generic"])
@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_every_callback_fault_costs_latency_never_a_job(sim, receiver_url, provider, kind):
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE,
        seed=5,
        callback_secret=SIGNING_SECRET,
        callback_faults=[CallbackFault(kind=kind, rate=1.0)],
    )
    sim.state.reset()
    if provider == "apixo":
        block = apixo_block(sim, receiver_url)
        requests = apixo_requests(8)
        policy = APIXO_POLICY.with_(callback_safety_interval=SHORT_SAFETY)
    else:
        block = generic_block(sim, receiver_url)
        requests = [{"kind": "render", "params": {"n": i}} for i in range(8)]
        policy = block.policy.with_(callback_safety_interval=SHORT_SAFETY)
    receiver = served(receiver_url, block)
    posts = {"lost": 0, "duplicated": 16, "replayed": 16, "forged": 16, "out_of_order": 16}
    try:
        results = await run_jobs(block, receiver.inbox, requests, policy)
        stats = await settled(sim, provider, posts.get(kind, 8))
    finally:
        receiver.server.stop()
    assert all(status.state is JobState.SUCCEEDED for _, status in results)
    assert stats["callback_faults"] == {kind: 8}
    assert stats["duplicate_submits"] == 0
    calls = stats["status_calls"]
    received = receiver.stats
    if kind == "lost":
        assert received["accepted"] == 0 and calls == 8  # each found by one safety poll
    elif kind == "delayed":
        assert calls <= 16  # the safety poll or the late callback, whichever comes first
    else:
        assert calls == 8  # one confirming poll per job, whatever else arrived
    if kind in ("duplicated", "replayed"):
        assert sum(received["rejected"].values()) == 8  # refused as replays (409)
    if kind == "forged":
        assert sum(received["rejected"].values()) == 8
    if kind == "early":
        assert received["deliveries"].get("kept") == 8  # before their waits: kept, not lost


async def test_a_trusted_signed_callback_ends_the_wait_without_a_status_call(sim, receiver_url):
    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=6, callback_secret=SIGNING_SECRET)
    sim.state.reset()
    block = generic_block(sim, receiver_url, trust_signed_callbacks=True)
    receiver = served(receiver_url, block)
    try:
        results = await run_jobs(
            block, receiver.inbox, [{"kind": "render", "params": {"n": i}} for i in range(5)]
        )
    finally:
        receiver.server.stop()
    assert all(status.state is JobState.SUCCEEDED for _, status in results)
    assert sim.stats()["generic"]["status_calls"] == 0


def sim_ed25519(**fields):
    """fal's Ed25519 scheme with the simulator's JWKS (a path on the API's origin)."""
    return FAL.model_copy(update={"jwks_url": "/.well-known/jwks.json", **fields})


def generic_tasks(n, start=0):
    return [{"kind": "render", "params": {"n": i}} for i in range(start, start + n)]


async def test_ed25519_callbacks_end_waits_and_a_rotated_key_costs_one_refetch(sim, receiver_url):
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE, seed=7, callback_signing={"generic": "ed25519"}
    )
    sim.state.reset()
    scheme = sim_ed25519(refetch_cooldown_s=0.0)
    block = generic_block(sim, receiver_url, webhook_secret=None, callback_scheme=scheme)
    receiver = served(receiver_url, block)
    try:
        first = await run_jobs(block, receiver.inbox, generic_tasks(5))
        sim.state.signing.rotate()  # mid-run: the receiver's cached key is now stale
        second = await run_jobs(block, receiver.inbox, generic_tasks(5, start=5))
        stats = await settled(sim, "generic", 10)
    finally:
        receiver.server.stop()
    assert all(status.state is JobState.SUCCEEDED for _, status in first + second)
    assert stats["status_calls"] == 10  # one confirming poll per job: every wait ended by callback
    assert receiver.stats["accepted"] == 10 and receiver.stats["rejected"] == {}
    assert sim.state.signing.jwks_requests == 2  # the first fetch, one refetch after the rotation


@pytest.mark.parametrize("signing", ["github", "stripe"])
async def test_hmac_signed_callbacks_end_waits_and_forged_ones_are_refused(
    sim, receiver_url, signing
):
    secret = secrets.token_urlsafe(24)
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE,
        seed=8,
        callback_secret=secret,
        callback_signing={"*": signing},
        callback_faults=[CallbackFault(kind="forged", rate=1.0)],
    )
    sim.state.reset()
    scheme = {"github": GITHUB, "stripe": STRIPE}[signing]
    block = generic_block(sim, receiver_url, webhook_secret=secret, callback_scheme=scheme)
    receiver = served(receiver_url, block)
    try:
        results = await run_jobs(block, receiver.inbox, generic_tasks(6))
        stats = await settled(sim, "generic", 12)
    finally:
        receiver.server.stop()
    assert all(status.state is JobState.SUCCEEDED for _, status in results)
    assert stats["status_calls"] == 6
    assert receiver.stats["accepted"] == 6 and sum(receiver.stats["rejected"].values()) == 6


async def test_forged_and_replayed_ed25519_callbacks_are_refused_without_refetches(
    sim, receiver_url
):
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE,
        seed=9,
        callback_signing={"generic": "ed25519"},
        callback_faults=[
            CallbackFault(kind="forged", rate=0.5),
            CallbackFault(kind="replayed", rate=1.0),
        ],
    )
    sim.state.reset()
    block = generic_block(sim, receiver_url, webhook_secret=None, callback_scheme=sim_ed25519())
    receiver = served(receiver_url, block)
    try:
        results = await run_jobs(block, receiver.inbox, generic_tasks(8))
        stats = await settled(sim, "generic", 16)
    finally:
        receiver.server.stop()
    assert all(status.state is JobState.SUCCEEDED for _, status in results)
    assert stats["status_calls"] == 8
    assert receiver.stats["accepted"] == 8
    assert sum(receiver.stats["rejected"].values()) == 8  # every forged or replayed copy
    assert sim.state.signing.jwks_requests == 1  # forged ones refetch only after the cooldown


@pytest.mark.usefixtures("prefect_harness")  # the wait's event subscription
async def test_openai_project_webhooks_wake_each_provider_batch_s_wait(sim, receiver_url, tmp_path):
    # One URL per project: the simulator posts each batch's end there (batch.completed,
    # naming the batch at data.id), signed with Standard Webhooks; no URL is sent.
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE,
        seed=3,
        batch_duration=(60.0, 120.0),
        callback_secret=SIGNING_SECRET,
        openai_webhook_url=f"{receiver_url}/hooks/openai-batch/-",
    )
    block = OpenAIBatchCredentials(
        api_key="sim-key",
        base_url=sim.base_url("openai-batch"),
        policy_scale=SIM_SCALE,
        callback_base_url=receiver_url,
        webhook_secret=SIGNING_SECRET,
        max_requests_per_batch=5,
    )
    request = provider_entry("openai-batch").sample_request
    items = [BatchItem(label=f"t{i}", key=f"hook-{i}", request=request) for i in range(15)]
    receiver = served_on(receiver_url, INBOX, block)
    ledger = Ledger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    # The safety poll 3,600 simulated seconds (36 s) away: only a webhook ends it sooner.
    policy = PollPolicy(initial_delay=10, interval=10, callback_safety_interval=3600)
    started = time.monotonic()
    try:
        outcomes = await provider_batch_outcomes(
            block, items, policy=policy, ledger=ledger, directory=tmp_path / "outcomes"
        )
    finally:
        receiver.server.stop()
        await ledger.aclose()
    stats = sim.state.stats()["openai-batch"]
    assert outcomes.counts == {"succeeded": 15}
    assert stats["batches_created"] == 3 and stats["callbacks_sent"] == 3
    # Each wait slept toward its safety poll; the webhook woke it for one poll.
    assert time.monotonic() - started < 30
    assert stats["status_calls"] == 3, stats
    assert receiver.stats["accepted"] == 3 and receiver.stats["rejected"] == {}


async def test_provider_batches_refuse_to_trust_a_webhook_for_their_status():
    with pytest.raises(ValueError, match="read from its final status"):
        OpenAIBatchCredentials(
            api_key="k",
            callback_base_url="http://127.0.0.1:1",
            webhook_secret=SIGNING_SECRET,
            trust_signed_callbacks=True,
        )
