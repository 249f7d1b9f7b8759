"""The end-to-end stack, shared by the tests of this package and stopped after them.

A ``prefect server start`` on a free loopback port with its own ``PREFECT_HOME``, on a
throwaway PostgreSQL (``deployments.postgres``, not durable: production's database,
where the other tests' servers use SQLite), the provider simulator, and, made with the
CLI commands of the Makefile, the blocks, the demo blocks, the process work pool, every
deployment of ``deployments/prefect.yaml`` and a process worker. Every process started
here is stopped, with its children, even when a test fails.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.client.schemas.objects import StateType

from deployments.postgres import create_database, local_postgres, server_env
from prefect_pollers import PollPolicy
from prefect_pollers.testing.registry import provider_entry
from prefect_pollers.testing.simulator import SimulatorConfig, SimulatorState, running_simulator
from tests.processes import (
    PREFECT,
    Process,
    api_client,
    free_port,
    subprocess_env,
    wait_healthy,
)

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
POOL = "pollers-process"
NIGHTLY = "nightly-portfolio-rescan"
FREQUENT = "every-10-seconds"
TIME_SCALE = 0.02
TERMINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


@dataclass
class Stack:
    """The running server, simulator and worker, with the blocks, pool and deployments."""

    api_url: str
    env: dict[str, str]
    server: Process
    simulator_stats: Callable[[], dict[str, Any]]
    simulator_state: SimulatorState
    simulator_url: str
    workdir: Path
    worker: Process | None = None

    def start_worker(self, name: str = "worker") -> Process:
        """Start a process worker on the pool's default queue (the current ``worker``)."""
        self.worker = Process(
            name,
            [*PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "-q", "default"],
            self.env,
            self.workdir,
        )
        return self.worker

    def cli(self, *args: str) -> str:
        """Run a ``prefect`` CLI command against the server; its output, or a test failure."""
        return self.run([*PREFECT, *args])

    def run(self, args: list[str], timeout: float = 120) -> str:
        """Run a command from the repository root against the server; its output."""
        done = subprocess.run(
            args,
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n"
                f"{done.stderr}\n{self.server.tail()}"
            )
        return done.stdout


def frequent_copy(directory: Path) -> Path:
    """A prefect.yaml holding the nightly batch-scans deployment on a 10 s interval instead.

    Its runs go to their own work queue, which the test's worker does not poll.
    """
    config = yaml.safe_load(PREFECT_YAML.read_text())
    nightly = next(d for d in config["deployments"] if d["name"] == NIGHTLY)
    config["deployments"] = [
        {
            **nightly,
            "name": FREQUENT,
            "schedules": [{"interval": 10}],
            "work_pool": {"name": POOL, "work_queue_name": "schedule-check"},
        }
    ]
    path = directory / "prefect.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Everything up, as a newcomer's README steps make it; all stopped at the end."""
    workdir = tmp_path_factory.mktemp("deployment-e2e")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = subprocess_env(workdir / "prefect-home", api_url)
    frequent_yaml = frequent_copy(workdir)
    with ExitStack() as cleanup, ThreadPoolExecutor(3) as threads:
        database_url = cleanup.enter_context(local_postgres(durable=False))  # stopped last
        # The ledger on the same PostgreSQL, in a database of its own, as in production.
        env["PREFECT_POLLERS_LEDGER_URL"] = create_database(database_url, "pollers_ledger")
        server = Process(
            "server",
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            {**env, **server_env(database_url)},
            workdir,
        )
        cleanup.callback(server.stop, signal.SIGTERM, 20)
        simulator = cleanup.enter_context(
            running_simulator(SimulatorConfig(time_scale=TIME_SCALE, seed=11))
        )
        wait_healthy(api_url, server)
        stack = Stack(
            api_url, env, server, simulator.stats, simulator.state, simulator.url, workdir
        )

        def blocks() -> None:
            stack.cli("block", "register", "-m", "prefect_pollers")
            stack.run(
                [
                    sys.executable,
                    "-m",
                    "deployments.create_demo_blocks",
                    "--simulator-url",
                    simulator.url,
                    "--time-scale",
                    str(TIME_SCALE),
                ]
            )

        def pool_worker_and_deployments() -> None:
            stack.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
            stack.start_worker()
            cleanup.callback(lambda: stack.worker and stack.worker.stop(signal.SIGTERM, 5))
            frequent = threads.submit(
                stack.cli, "--no-prompt", "deploy", "--all", "--prefect-file", str(frequent_yaml)
            )
            stack.cli("--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML))
            frequent.result()

        for step in [threads.submit(blocks), threads.submit(pool_worker_and_deployments)]:
            step.result()
        yield stack


NEVER_ENDING_GENERIC = "generic-never-ending"
"""A ``generic`` block whose waits last 10 real minutes (``save_never_ending_generic_block``)."""


async def save_never_ending_generic_block(stack: Stack) -> str:
    """Save a ``generic`` block for jobs that never end: its deadline (600 s real) is
    never what ends their wait, however slow the machine, so a cancel test's cancel
    always finds them running. Returns its name."""
    block = provider_entry("generic").simulator_block(
        stack.simulator_url,
        time_scale=TIME_SCALE,
        policy=PollPolicy(interval=5.0, deadline=600.0 / TIME_SCALE),
    )
    async with api_client(stack.api_url):
        await block.asave(NEVER_ENDING_GENERIC, overwrite=True)
    return NEVER_ENDING_GENERIC


async def until_healthy(http: httpx.AsyncClient, receiver: Process, timeout: float = 60) -> None:
    """Wait until the webhook receiver ``receiver`` answers ``GET /health`` on ``http``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(httpx.HTTPError):
            if (await http.get("/health")).status_code == 200:
                return
        assert receiver.popen.poll() is None, receiver.tail()
        await asyncio.sleep(0.3)
    raise AssertionError(f"the receiver did not answer within {timeout} s\n{receiver.tail()}")
