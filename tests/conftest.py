"""Shared test setup: quiet, isolated Prefect settings before Prefect is imported."""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="prefect-pollers-test-home-")
os.environ.update(
    {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
        "PREFECT_HOME": _home,
        "PREFECT_LOCAL_STORAGE_PATH": os.path.join(_home, "storage"),
        # the test server writes events each second (5 s by default): a batch's end,
        # which waits for its job events to be stored, comes sooner
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
    }
)
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402 - after the environment above

from tests.constants import SIM_SCALE  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it takes ~15 s to start).

    One per test process (pytest-xdist starts two): on a loaded 2-core machine two
    servers starting at once took more than 60 s.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def simulator():
    """The real simulator on loopback, fast time, for the whole session."""
    from prefect_pollers.testing.simulator import SimulatorConfig, running_simulator

    with running_simulator(SimulatorConfig(time_scale=SIM_SCALE, seed=1)) as sim:
        yield sim


@pytest.fixture
def sim(simulator):
    """The session simulator with fresh counters and default knobs for one test."""
    from prefect_pollers.testing.simulator import SimulatorConfig

    simulator.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=1)
    simulator.state.reset()
    return simulator
