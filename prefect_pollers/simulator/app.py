"""The ASGI application that serves all five providers and the control routes."""

from __future__ import annotations

from starlette.applications import Starlette

from prefect_pollers.simulator.apixo import Apixo
from prefect_pollers.simulator.clock import SimulatorClock
from prefect_pollers.simulator.config import SimulatorConfig
from prefect_pollers.simulator.control import control_routes
from prefect_pollers.simulator.exona import Exona
from prefect_pollers.simulator.generic import Generic
from prefect_pollers.simulator.modelroute import ModelRoute
from prefect_pollers.simulator.provider import Provider
from prefect_pollers.simulator.state import SimulatorState
from prefect_pollers.simulator.twyn import Twyn

PROVIDERS: tuple[type[Provider], ...] = (Exona, Twyn, Apixo, ModelRoute, Generic)
PREFIXES: dict[str, str] = {provider.name: provider.prefix for provider in PROVIDERS}
"""Each provider's base-URL path on the simulator, e.g. ``"exona": "/exona/api/v1"``."""


def create_app(
    config: SimulatorConfig | None = None, *, clock: SimulatorClock | None = None
) -> Starlette:
    """Build the simulator app; its live state is ``app.state.simulator``.

    Args:
        config: Settings (defaults if None).
        clock: Where time is read (the real clocks if None); pass a
            :class:`~prefect_pollers.simulator.clock.ManualClock` to drive time by hand.

    Returns:
        The Starlette app serving every provider under its prefix and ``/_sim``.
    """
    state = SimulatorState(config, clock)
    for provider_class in PROVIDERS:
        state.add(provider_class(state))

    routes = control_routes(state)
    for provider in state.providers.values():
        routes.extend(provider.routes())
    app = Starlette(routes=routes, lifespan=lambda app: state.serving())
    app.state.simulator = state
    return app
