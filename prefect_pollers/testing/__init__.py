"""Test helpers: the provider simulator, virtual time and the demo registry.

Install the ``testing`` extra (``pip install "prefect-pollers[testing]"``) for the
simulator's server. The simulator lives in
:mod:`prefect_pollers.testing.simulator`, the clock in :mod:`prefect_pollers.engine` and the
registry in :mod:`prefect_pollers.testing.registry`.

Typical use, a flow's test against a real simulator on virtual-fast time::

    with running_simulator(SimulatorConfig(time_scale=0.01)) as sim:
        block = provider_entry("exona").simulator_block(sim.url, time_scale=0.01)
"""

from prefect_pollers.engine import VirtualClock, use_clock
from prefect_pollers.testing.registry import (
    BATCH_PROVIDERS,
    DEMO_TIME_SCALE,
    PROVIDERS,
    SIMULATOR_API_KEY,
    ProviderEntry,
    provider_entry,
)
from prefect_pollers.testing.simulator import (
    FaultRule,
    ManualClock,
    RunningSimulator,
    SimulatorConfig,
    SimulatorState,
    arunning_simulator,
    create_app,
    running_simulator,
)

__all__ = [
    "BATCH_PROVIDERS",
    "DEMO_TIME_SCALE",
    "PROVIDERS",
    "SIMULATOR_API_KEY",
    "FaultRule",
    "ManualClock",
    "ProviderEntry",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorState",
    "VirtualClock",
    "arunning_simulator",
    "create_app",
    "provider_entry",
    "running_simulator",
    "use_clock",
]
