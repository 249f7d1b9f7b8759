"""A local simulator of the five asynchronous job APIs prefect-pollers talks to.

It serves Exona, Twyn, APIXO, ModelRoute and a generic job API from one ASGI app,
faithful to their documented contracts (and explicit about the choices where the
documents are silent), with scaled time, reproducible randomness, fault injection
and counters that show how a client behaved. Two provider-batch APIs are simulated
too, OpenAI Batch (``openai_batch``) and Anthropic Message Batches
(``anthropic_batch``), and one API of the catalog, fal's queue (``fal``, at ``/fal``);
the app mounts them once the registry lists them::

    with running_simulator(SimulatorConfig(time_scale=0.01, seed=7)) as sim:
        base = sim.base_url("exona")
        ...
        assert sim.stats()["exona"]["duplicate_submits"] == 0
"""

from prefect_pollers.testing.simulator.app import PREFIXES, create_app
from prefect_pollers.testing.simulator.clock import ManualClock, RealClock, SimulatorClock
from prefect_pollers.testing.simulator.config import FaultKind, FaultRule, SimulatorConfig
from prefect_pollers.testing.simulator.faults import SimulatedReset
from prefect_pollers.testing.simulator.runner import (
    RunningSimulator,
    arunning_simulator,
    running_simulator,
)
from prefect_pollers.testing.simulator.state import SimulatorState

__all__ = [
    "PREFIXES",
    "FaultKind",
    "FaultRule",
    "ManualClock",
    "RealClock",
    "RunningSimulator",
    "SimulatedReset",
    "SimulatorClock",
    "SimulatorConfig",
    "SimulatorState",
    "arunning_simulator",
    "create_app",
    "running_simulator",
]
