"""End to end: Ed25519-signed callbacks (fal's scheme, keys from a JWKS) end a flow's waits.

On the package's stack: the simulator signs callbacks with its own Ed25519 key and
serves the public key at ``/.well-known/jwks.json``; the receiver (``prefect-pollers
webhooks serve``) fetches that JWKS and verifies each callback; the ``generic-jobs``
deployment runs on the worker with a saved ``HttpJobApi`` block whose
``callback_scheme`` is that declaration: the generic API's block, or the catalog's fal
preset on the simulator's fal queue (its webhooks in fal's own headers and body).
Asserted on counters (the simulator's, the receiver's) and the flow run's state, never
on logs.
"""

from __future__ import annotations

import re
import signal
import sys
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun

from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.signatures import FAL
from prefect_pollers.testing.registry import provider_entry
from prefect_pollers.testing.simulator import SimulatorConfig
from tests.e2e.conftest import TERMINAL, TIME_SCALE, Stack, until_healthy
from tests.processes import Process, api_client, free_port, poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIM_ED25519 = FAL.model_copy(update={"jwks_url": "/.well-known/jwks.json"})
"""fal's scheme, its JWKS the simulator's (a path on the API's origin)."""


async def run_with_receiver(
    stack: Stack,
    provider: str,
    block: JobApiCredentials[Any],
    port: int,
    *params: str,
) -> tuple[FlowRun, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Save ``block`` as ``<provider>-ed25519``, serve its receiver on ``port``, run the
    ``generic-jobs`` deployment on it with ``params``; the flow run, ``provider``'s
    simulator counters before and after, and the receiver's counters."""
    name = f"{provider}-ed25519"
    async with api_client(stack.api_url):
        await block.asave(name, overwrite=True)
    receiver = Process(
        f"webhooks-{provider}",
        [
            sys.executable,
            "-m",
            "prefect_pollers.cli",
            "webhooks",
            "serve",
            "--port",
            str(port),
            "--block",
            f"http-job-api/{name}",
        ],
        stack.env,
        stack.workdir,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            await until_healthy(http, receiver)
            before = stack.simulator_stats()[provider]
            output = stack.cli(
                "deployment",
                "run",
                "generic-jobs/render-every-6-hours",
                "--param",
                f"api={name}",
                *params,
            )
            match = re.search(r"UUID: ([0-9a-f-]{36})", output)
            assert match, output
            async with api_client(stack.api_url) as client:
                flow_run = await poll(
                    lambda: client.read_flow_run(UUID(match.group(1))),
                    lambda run: run.state_type in TERMINAL,
                    timeout=120,
                )
            assert flow_run.state_type is not None and flow_run.state_type.value == "COMPLETED", (
                f"{flow_run.state}\n{stack.worker.tail() if stack.worker else ''}"
            )
            after = stack.simulator_stats()[provider]
            received = (await http.get("/health")).json()
    finally:
        receiver.stop(signal.SIGTERM, 20)
    return flow_run, before, after, received


async def test_ed25519_callbacks_end_a_flow_s_waits(stack: Stack) -> None:
    state = stack.simulator_state
    state.config = SimulatorConfig(
        time_scale=TIME_SCALE, seed=11, callback_signing={"generic": "ed25519"}
    )
    port = free_port()
    block = provider_entry("generic").simulator_block(
        stack.simulator_url,
        time_scale=1.0,  # the safety cadence stays 60 s while the simulator runs fast
        callback_base_url=f"http://127.0.0.1:{port}",
        callback_url_field="task.callback_url",
        callback_job_id_field="task.uid",
        callback_scheme=SIM_ED25519,
    )
    try:
        flow_run, before, after, received = await run_with_receiver(stack, "generic", block, port)
    finally:
        state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11)
    jobs = after["submits"] - before["submits"]
    assert jobs == 3
    assert after["callbacks_sent"] - before["callbacks_sent"] == 3
    # One confirming status call per job: every wait was ended by its signed callback.
    assert after["status_calls"] - before["status_calls"] == 3
    assert received["accepted"] == 3 and received["rejected"] == {}
    assert state.signing.jwks_requests >= 1  # the receiver read the simulator's JWKS
    assert flow_run.start_time and flow_run.end_time
    assert (flow_run.end_time - flow_run.start_time).total_seconds() < 60


async def test_a_flow_on_fal_s_shape_ends_its_waits_by_ed25519_webhooks(stack: Stack) -> None:
    state = stack.simulator_state
    state.config = SimulatorConfig(
        time_scale=TIME_SCALE, seed=12, callback_signing={"fal": "ed25519"}
    )
    jwks_before = state.signing.jwks_requests
    port = free_port()
    block = provider_entry("fal").simulator_block(
        stack.simulator_url,
        time_scale=1.0,  # the safety cadence stays 60 s while the simulator runs fast
        callback_base_url=f"http://127.0.0.1:{port}",
        callback_scheme=SIM_ED25519,  # the preset's, its JWKS the simulator's
    )
    assert block.webhook_secret is None
    prompts = '[{"prompt": "a fox"}, {"prompt": "a cat"}, {"prompt": "a heron"}]'
    try:
        flow_run, before, after, received = await run_with_receiver(
            stack, "fal", block, port, "--param", f"jobs={prompts}"
        )
    finally:
        state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11)
    assert after["submits"] - before["submits"] == 3
    assert after["callbacks_sent"] - before["callbacks_sent"] == 3
    # One confirming status call per request: every wait was ended by fal's webhook.
    assert after["status_calls"] - before["status_calls"] == 3
    assert received["accepted"] == 3 and received["rejected"] == {}
    assert state.signing.jwks_requests > jwks_before  # this receiver read the JWKS
    assert flow_run.start_time and flow_run.end_time
    assert (flow_run.end_time - flow_run.start_time).total_seconds() < 60
