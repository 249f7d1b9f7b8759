"""An in-process simulator and an httpx client for it, shared by the simulator tests."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from prefect_pollers.testing import VirtualClock
from prefect_pollers.testing.simulator import (
    FaultRule,
    ManualClock,
    SimulatorConfig,
    SimulatorState,
    create_app,
)

BEARER = {"Authorization": "Bearer sim-key"}
SCAN = {"company_name": "Acme", "company_website": "https://acme.ai"}
SCANS = "/exona/api/v1/scans"


@asynccontextmanager
async def simulator(
    *faults: FaultRule, clock: ManualClock | None = None, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, SimulatorState]]:
    """An in-process simulator with ``faults`` (if any) and a client for it."""
    app = create_app(SimulatorConfig(faults=list(faults), **settings), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client, app.state.simulator
    await app.state.simulator.aclose()


@dataclass
class VirtualSimClock:
    """The simulator's clock, read from the waits' virtual clock."""

    clock: VirtualClock

    def monotonic(self) -> float:
        return self.clock.time()

    def time(self) -> float:
        return self.clock.time()
