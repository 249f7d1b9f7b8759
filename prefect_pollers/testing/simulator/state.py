"""The live simulator: configuration, clock, fault injector and the providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from prefect_pollers.testing.simulator.clock import RealClock, SimulatorClock
from prefect_pollers.testing.simulator.config import SimulatorConfig
from prefect_pollers.testing.simulator.faults import FaultInjector
from prefect_pollers.testing.simulator.provider import Provider
from prefect_pollers.testing.simulator.signing import SigningKeys

T = TypeVar("T")


class SimulatorState:
    """Everything one running simulator knows; ``config`` may be replaced at any time.

    Providers read ``config`` on every request, so a new value applies to the next
    request (durations and fates are fixed when a job is created). While a server
    runs the app, :meth:`stats` and :meth:`reset` may be called from any thread: they
    run on the serving event loop, where all other changes to the state happen.
    """

    def __init__(
        self, config: SimulatorConfig | None = None, clock: SimulatorClock | None = None
    ) -> None:
        """Start with ``config`` (defaults if None) and ``clock`` (the real one if None)."""
        self.config = config or SimulatorConfig()
        self.clock: SimulatorClock = clock or RealClock()
        self.faults = FaultInjector(self.config.seed)
        self.signing = SigningKeys(self.config.seed)
        self.providers: dict[str, Provider] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, provider: Provider) -> None:
        """Register a provider under its name."""
        self.providers[provider.name] = provider

    def reset(self) -> None:
        """Forget every job and counter and reseed all random draws from ``config.seed``."""
        self._on_loop(self._reset)

    def stats(self) -> dict[str, Any]:
        """Every provider's counters, keyed by provider name."""
        return self._on_loop(self._stats)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Bind the state to the serving event loop for the server's lifetime."""
        self._loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            self._loop = None
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the providers' background work."""
        for provider in self.providers.values():
            await provider.aclose()

    def _reset(self) -> None:
        """Reset, on the serving loop."""
        self.faults = FaultInjector(self.config.seed)
        self.signing = SigningKeys(self.config.seed)
        for provider in self.providers.values():
            provider.reset()

    def _stats(self) -> dict[str, Any]:
        """Collect the counters, on the serving loop."""
        return {name: provider.snapshot() for name, provider in self.providers.items()}

    def _on_loop(self, action: Callable[[], T]) -> T:
        """Run ``action`` on the serving loop's thread (here if none, or already there)."""
        loop = self._loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is None or current is loop or not loop.is_running():
            return action()

        async def run() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)
