"""Callbacks end waits: APIXO's capability URLs and Standard Webhooks, on the real simulator.

The simulator posts callbacks over loopback to a receiver served in this process;
the receiver wakes the wait through the inbox (no Prefect here: events off).
"""

import asyncio
import secrets

import pytest

from prefect_pollers import ApixoCredentials, HttpJobApi, PollPolicy
from prefect_pollers.engine import JobState
from prefect_pollers.providers.registry import GENERIC_SIMULATOR_API
from prefect_pollers.serving import BackgroundServer, bind_socket
from prefect_pollers.simulator import SimulatorConfig
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import CallbackInbox
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
        webhook_secret=SIGNING_SECRET,
        callback_url_field="task.callback_url",
        callback_job_id_field="task.uid",
        **fields,
    )


APIXO_POLICY = PollPolicy(
    initial_delay=5, interval=3, deadline=600, callback_safety_interval=SAFETY
)


class Receiver:
    """A receiver for ``blocks`` served on loopback, delivering to its own inbox."""

    def __init__(self, url, *blocks):
        self.inbox = CallbackInbox()
        self.app = create_webhook_app(blocks, inbox=self.inbox, emit_events=False)
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
            wakeup = inbox.register(ref)
            try:
                return ref, await client.wait(ref, policy, wakeup=wakeup)
            finally:
                inbox.unregister(ref, wakeup)

        return await asyncio.gather(*(one(r) for r in requests))


def served(url, *blocks):
    receiver = Receiver(url, *blocks)
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
