"""Serving the simulator with uvicorn: in a background thread for tests, or in the foreground."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from prefect_pollers.ops.serving import BackgroundServer, uvicorn_server
from prefect_pollers.testing.simulator.app import PREFIXES, create_app
from prefect_pollers.testing.simulator.clock import SimulatorClock
from prefect_pollers.testing.simulator.config import SimulatorConfig
from prefect_pollers.testing.simulator.faults import SimulatedReset
from prefect_pollers.testing.simulator.state import SimulatorState


class _DropSimulatedResets(logging.Filter):
    """Keep uvicorn from logging a traceback for each connection dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Reject records caused by :class:`SimulatedReset`."""
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedReset))


_RESET_FILTER = _DropSimulatedResets()


def build_server(app: Starlette, *, log_level: str, embedded: bool) -> uvicorn.Server:
    """A uvicorn server for the simulator, without access logs nor simulated-reset tracebacks.

    Args:
        app: The simulator app.
        log_level: uvicorn's log level.
        embedded: True inside another program (tests): leave its logging setup alone.
    """
    logging.getLogger("uvicorn.error").addFilter(_RESET_FILTER)
    return uvicorn_server(app, log_level=log_level, embedded=embedded)


class RunningSimulator(BackgroundServer):
    """A simulator served on loopback by a background thread.

    Attributes:
        url: The server's root URL, e.g. ``"http://127.0.0.1:54321"``.
        state: The live :class:`SimulatorState` (assign ``state.config`` to reconfigure).
    """

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        """Bind the socket and prepare (not start) the server."""
        logging.getLogger("uvicorn.error").addFilter(_RESET_FILTER)
        super().__init__(app, host, port, name="simulator")
        self.state: SimulatorState = app.state.simulator

    def base_url(self, provider: str) -> str:
        """A provider's base URL, e.g. ``base_url("exona")`` -> ``".../exona/api/v1"``.

        Raises:
            ValueError: If ``provider`` is not one the simulator serves.
        """
        if provider not in PREFIXES:
            raise ValueError(f"unknown provider {provider!r}; expected one of {sorted(PREFIXES)}")
        return self.url + PREFIXES[provider]

    def stats(self) -> dict[str, Any]:
        """The counters, as ``GET /_sim/stats`` returns them (safe from any thread)."""
        return self.state.stats()


@contextmanager
def running_simulator(
    config: SimulatorConfig | None = None,
    *,
    clock: SimulatorClock | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[RunningSimulator]:
    """Serve a simulator on ``host`` (loopback, a free port by default) for the block.

    Args:
        config: Settings (defaults if None).
        clock: Where time is read (the real clocks if None).
        host: Address to bind.
        port: Port to bind (0: any free port).

    Yields:
        The running simulator; it is stopped when the block exits.
    """
    simulator = RunningSimulator(create_app(config, clock=clock), host, port)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@asynccontextmanager
async def arunning_simulator(
    config: SimulatorConfig | None = None,
    *,
    clock: SimulatorClock | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[RunningSimulator]:
    """Like :func:`running_simulator`, but starts and stops without blocking the event loop.

    Args:
        config: Settings (defaults if None).
        clock: Where time is read (the real clocks if None).
        host: Address to bind.
        port: Port to bind (0: any free port).

    Yields:
        The running simulator; it is stopped when the block exits.
    """
    simulator = RunningSimulator(create_app(config, clock=clock), host, port)
    await asyncio.to_thread(simulator.start)
    try:
        yield simulator
    finally:
        await asyncio.to_thread(simulator.stop)


def serve(config: SimulatorConfig, sock: socket.socket, *, log_level: str) -> None:
    """Serve a simulator on the bound ``sock`` in the foreground until Ctrl-C or SIGTERM."""
    try:
        build_server(create_app(config), log_level=log_level, embedded=False).run(sockets=[sock])
    finally:
        sock.close()
