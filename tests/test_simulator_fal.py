"""fal's queue on the simulator, driven by the catalog's fal preset.

The preset's block (``provider_entry("fal").simulator_block``) submits, polls the URLs
the submit answered, fetches results and cancels against ``/fal``; failures end
``COMPLETED`` with an error, 429 bursts are ridden out, and webhooks are Ed25519-signed
under the simulator's JWKS, so a receiver with fal's scheme (and no secret) ends the
waits. Asserted on the simulator's and the receiver's counters.
"""

import asyncio
import tempfile

import httpx
import pytest

from prefect_pollers import JobCancelledError, JobFailedError, PollPolicy
from prefect_pollers.engine import JobState
from prefect_pollers.ledger.replays import LedgerReplays
from prefect_pollers.ops.serving import BackgroundServer, bind_socket
from prefect_pollers.providers.signatures import FAL
from prefect_pollers.testing.registry import provider_entry
from prefect_pollers.testing.simulator import FaultRule, SimulatorConfig
from prefect_pollers.testing.simulator.config import CallbackFault
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import CallbackInbox
from tests.constants import SIM_SCALE

SIM_FAL = FAL.model_copy(update={"jwks_url": "/.well-known/jwks.json"})
"""fal's scheme, its JWKS the simulator's (a path on the API's origin)."""


def fal_block(sim, **fields):
    return provider_entry("fal").simulator_block(sim.url, time_scale=SIM_SCALE, **fields)


async def test_the_fal_preset_runs_a_request_to_its_result(sim):
    async with fal_block(sim).get_client() as client:
        ref = await client.submit({"prompt": "a fox"})
        result = await client.wait_for_result(ref)
    root = f"{sim.url}/fal/fal-ai/flux/requests/{ref.job_id}"  # owner/alias, no subpath
    assert ref.context == {
        "response_url": root,
        "status_url": f"{root}/status",
        "cancel_url": f"{root}/cancel",
    }
    assert result.output["prompt"] == "a fox" and result.output["images"]
    stats = sim.stats()["fal"]
    assert stats["submits"] == 1 and stats["duplicate_submits"] == 0


async def test_a_failed_fal_request_and_a_cancelled_one_end_in_typed_errors(sim):
    async with fal_block(sim).get_client() as client:
        failed = await client.submit({"prompt": "please fail"})
        with pytest.raises(JobFailedError) as raised:
            await client.wait_for_result(failed)
        cancelled = await client.submit({"prompt": "a dog"})
        assert await client.cancel(cancelled)
        with pytest.raises(JobCancelledError):
            await client.wait_for_result(cancelled)
    assert raised.value.status.error_code == "content_policy"  # COMPLETED with an error
    assert sim.stats()["fal"]["cancels"] == 1


async def test_fal_refuses_a_wrong_key_and_its_429s_are_ridden_out(sim):
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE,
        faults=[FaultRule(provider="fal", route="status", kind="burst_429", first=2)],
    )
    async with httpx.AsyncClient(base_url=sim.url) as http:
        answer = await http.post(
            "/fal/fal-ai/flux/dev", json={}, headers={"Authorization": "Key x"}
        )
    assert answer.status_code == 401 and "detail" in answer.json()
    async with fal_block(sim).get_client() as client:
        result = await client.wait_for_result(await client.submit({"prompt": "a cat"}))
    assert result.output["prompt"] == "a cat"
    assert sim.stats()["fal"]["http_429"] == 2


@pytest.fixture
def receiver_url():
    with bind_socket("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_ed25519_webhooks_end_fal_waits_and_forgeries_are_refused(sim, receiver_url):
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE,
        seed=4,
        callback_signing={"fal": "ed25519"},
        callback_faults=[CallbackFault(kind="forged", rate=1.0)],
    )
    sim.state.reset()
    policy = PollPolicy(initial_delay=1, interval=2, deadline=600, callback_safety_interval=300)
    block = fal_block(sim, callback_base_url=receiver_url, callback_scheme=SIM_FAL, policy=policy)
    assert block.webhook_secret is None  # Ed25519 under a JWKS: no shared secret
    inbox = CallbackInbox()
    ledger = "sqlite+aiosqlite:///" + tempfile.mkdtemp() + "/ledger.db"
    app = create_webhook_app([block], inbox=inbox, emit_events=False, replays=LedgerReplays(ledger))
    host, port = receiver_url.removeprefix("http://").split(":")
    server = BackgroundServer(app, host, int(port))
    server.start()
    try:
        async with block.get_client() as client:

            async def one(prompt):
                ref = await client.submit({"prompt": prompt})
                wakeup = inbox.register(ref, block.attestation_key())
                try:
                    return await client.wait(ref, wakeup=wakeup)
                finally:
                    inbox.unregister(ref, wakeup)

            statuses = await asyncio.gather(*(one(f"fox {i}") for i in range(5)))
        for _ in range(100):  # the forged copies may still be on their way
            stats = sim.stats()["fal"]
            if sum(stats["callback_responses"].values()) >= 10:
                break
            await asyncio.sleep(0.05)
    finally:
        server.stop()
    received = app.state.receiver_stats.snapshot()
    assert all(status.state is JobState.SUCCEEDED for status in statuses)
    assert stats["status_calls"] == 5  # one confirming poll each: every wait ended by webhook
    assert stats["callbacks_sent"] == 5
    assert received["accepted"] == 5 and sum(received["rejected"].values()) == 5
    assert sim.state.signing.jwks_requests == 1
