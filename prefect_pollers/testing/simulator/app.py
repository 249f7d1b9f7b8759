"""The ASGI application that serves every provider of the registry and the control routes."""

from __future__ import annotations

from starlette.applications import Starlette

from prefect_pollers.testing.registry import BATCH_PROVIDERS, CATALOG_PROVIDERS, PROVIDERS
from prefect_pollers.testing.simulator.anthropic_batch import AnthropicBatch
from prefect_pollers.testing.simulator.apixo import Apixo
from prefect_pollers.testing.simulator.clock import SimulatorClock
from prefect_pollers.testing.simulator.config import SimulatorConfig
from prefect_pollers.testing.simulator.control import control_routes
from prefect_pollers.testing.simulator.exona import Exona
from prefect_pollers.testing.simulator.fal import Fal
from prefect_pollers.testing.simulator.generic import Generic
from prefect_pollers.testing.simulator.modelroute import ModelRoute
from prefect_pollers.testing.simulator.openai_batch import OpenAIBatch
from prefect_pollers.testing.simulator.provider import Provider
from prefect_pollers.testing.simulator.signing import signing_routes
from prefect_pollers.testing.simulator.state import SimulatorState
from prefect_pollers.testing.simulator.twyn import Twyn

SIMULATED: dict[str, type[Provider]] = {
    provider.name: provider
    for provider in (
        Exona,
        Twyn,
        Apixo,
        ModelRoute,
        Generic,
        OpenAIBatch,
        AnthropicBatch,
        Fal,
    )
}
"""The simulation of each provider of the registry, by name."""
PREFIXES: dict[str, str] = {
    entry.name: entry.simulator_prefix
    for entry in (*PROVIDERS, *BATCH_PROVIDERS, *CATALOG_PROVIDERS)
}
"""Each provider's base-URL path on the simulator, e.g. ``"exona": "/exona/api/v1"``."""


def create_app(
    config: SimulatorConfig | None = None, *, clock: SimulatorClock | None = None
) -> Starlette:
    """Build the simulator app; its live state is ``app.state.simulator``.

    Args:
        config: Settings (defaults if None).
        clock: Where time is read (the real clocks if None); pass a
            :class:`~prefect_pollers.testing.simulator.clock.ManualClock` to drive time by hand.

    Returns:
        The Starlette app serving every provider under its prefix and ``/_sim``.
    """
    state = SimulatorState(config, clock)
    for entry in (*PROVIDERS, *BATCH_PROVIDERS, *CATALOG_PROVIDERS):
        state.add(SIMULATED[entry.name](state, entry.simulator_prefix))

    routes = control_routes(state) + signing_routes(lambda: state.signing)
    for provider in state.providers.values():
        routes.extend(provider.routes())
    app = Starlette(routes=routes, lifespan=lambda app: state.serving())
    app.state.simulator = state
    return app
