"""The brief wait and hand-over decision, for every provider and every ``handover_after``.

The in-process simulator and the waits share one virtual clock (real durations, no
real time): each job is waited for briefly as a durable batch does, and a job handed
over is waited for again as the poller does. Asserted: no setting fails (a brief
deadline under the preset's first poll used to raise after the jobs were created),
the brief wait never polls after its hand-over time, and the poller's first poll is
not before the flow's next scheduled one (no early poll across the hand-over).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from prefect_pollers import JobEndedError, JobRef
from prefect_pollers.client import JobApiClient
from prefect_pollers.durable.handover import HandOver, wait_briefly, wait_handed_over
from prefect_pollers.durable.records import HandedOverJob
from prefect_pollers.testing import VirtualClock, use_clock
from prefect_pollers.testing.registry import PROVIDERS, ProviderEntry
from prefect_pollers.testing.simulator import SimulatorConfig, create_app
from tests.sim_client import VirtualSimClock

pytestmark = pytest.mark.usefixtures("prefect_harness")
LOGGER = logging.getLogger("tests.durable_handover")
HANDOVER_AFTER = (0.0, 5.0, 30.0, 3600.0)
CASES = [(entry, entry.sample_request) for entry in PROVIDERS] + [
    (entry, {"model": model, "input": {"prompt": "a fox"}})
    for entry in PROVIDERS
    if entry.name == "apixo"
    for model in ("sora-2", "veo-3-1")
]


@dataclass
class _Recording(httpx.AsyncBaseTransport):
    """Records the virtual time of every request the client sends."""

    inner: httpx.AsyncBaseTransport
    clock: VirtualClock
    gets: list[float] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.gets.append(self.clock.time())
        return await self.inner.handle_async_request(request)


@asynccontextmanager
async def on_simulator(
    entry: ProviderEntry,
) -> AsyncIterator[tuple[VirtualClock, JobApiClient[Any], _Recording]]:
    clock = VirtualClock()
    app = create_app(SimulatorConfig(seed=7), clock=VirtualSimClock(clock))
    recording = _Recording(httpx.ASGITransport(app=app), clock)
    block = entry.block(f"http://sim{entry.simulator_prefix}", "sim-key")
    with use_clock(clock):
        async with block.get_client(transport=recording) as client:
            yield clock, client, recording
    await app.state.simulator.aclose()


@pytest.mark.parametrize("handover_after", HANDOVER_AFTER)
@pytest.mark.parametrize(
    ("entry", "request_"),
    CASES,
    ids=[f"{e.name}-{r.get('model', '')}".strip("-") for e, r in CASES],
)
async def test_every_provider_and_setting_waits_briefly_then_hands_over_at_pace(
    entry: ProviderEntry, request_: dict[str, Any], handover_after: float
) -> None:
    async with on_simulator(entry) as (clock, client, recording):
        credentials = client.credentials
        ref: JobRef = await client.submit(request_, idempotency_key="k")
        cut_at = clock.time() + handover_after
        try:
            verdict = await wait_briefly(
                credentials, ref, None, handover_after, logger=LOGGER, client=client
            )
        except JobEndedError:
            return  # the job ended (failed) within the time: an outcome, as any wait's
        if not isinstance(verdict, HandOver):
            assert verdict.job_id == ref.job_id  # ended in time: its result
            return
        assert all(at <= cut_at for at in recording.gets), "a poll after the hand-over time"
        assert clock.time() <= cut_at
        flow_polls = len(recording.gets)
        policy = credentials.effective_policy(ref)
        if verdict.next_poll_at is None:
            assert handover_after == 0 and flow_polls == 0
            not_before = ref.submitted_at.timestamp() + policy.initial_delay
        else:
            not_before = verdict.next_poll_at.timestamp()
            assert not_before > cut_at
        job = HandedOverJob(key="k", label="k", ref=ref, next_poll_at=verdict.next_poll_at)
        try:
            result = await wait_handed_over(credentials, job, None, logger=LOGGER, client=client)
        except JobEndedError:
            result = None
        assert result is None or result.job_id == ref.job_id
        assert recording.gets[flow_polls] >= not_before, "the poller polled early"


async def test_a_preset_first_poll_after_the_handover_time_hands_over_at_once() -> None:
    """Exona's first poll is at 30 s: with 5 s, the job is handed over without a poll."""
    exona = next(entry for entry in PROVIDERS if entry.name == "exona")
    async with on_simulator(exona) as (clock, client, recording):
        ref = await client.submit(exona.sample_request)
        started = clock.time()
        verdict = await wait_briefly(
            client.credentials, ref, None, 5.0, logger=LOGGER, client=client
        )
        assert isinstance(verdict, HandOver) and recording.gets == []
        assert clock.time() == started  # handed over at once, not after 5 s
        assert verdict.next_poll_at is not None
        assert verdict.next_poll_at.timestamp() == ref.submitted_at.timestamp() + 30.0
