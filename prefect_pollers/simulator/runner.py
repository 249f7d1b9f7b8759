"""Serving the simulator with uvicorn: in a background thread for tests, or in the foreground.

The listening socket is bound before uvicorn starts and handed to it, so a free port
(port 0) is known at once and never raced for.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from prefect_pollers.simulator.app import PREFIXES, create_app
from prefect_pollers.simulator.clock import SimulatorClock
from prefect_pollers.simulator.config import SimulatorConfig
from prefect_pollers.simulator.faults import SimulatedReset
from prefect_pollers.simulator.state import SimulatorState

STARTUP_TIMEOUT_S = 10.0


class _DropSimulatedResets(logging.Filter):
    """Keep uvicorn from logging a traceback for each connection dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Reject records caused by :class:`SimulatedReset`."""
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedReset))


_RESET_FILTER = _DropSimulatedResets()


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a TCP socket on ``host``:``port`` (0 picks a free port) and listen on it.

    The protocol is given explicitly: asyncio only turns Nagle's algorithm off
    (TCP_NODELAY) on sockets that say they are TCP, and without that every response
    written in two parts stalls ~40 ms on the client's delayed ACK.

    The socket listens at once, so the URL can be announced before uvicorn has
    started: a client that connects early waits in the backlog instead of being
    refused.

    Raises:
        OSError: If the address cannot be bound (e.g. the port is in use).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def build_server(app: Starlette, *, log_level: str, embedded: bool) -> uvicorn.Server:
    """A uvicorn server for ``app`` without access logs.

    Args:
        app: The simulator app.
        log_level: uvicorn's log level.
        embedded: True inside another program (tests): leave its logging setup alone.
    """
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        log_config=None if embedded else uvicorn.config.LOGGING_CONFIG,
        http="h11",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    logging.getLogger("uvicorn.error").addFilter(_RESET_FILTER)
    return uvicorn.Server(config)


class RunningSimulator:
    """A simulator served on loopback by a background thread.

    Attributes:
        url: The server's root URL, e.g. ``"http://127.0.0.1:54321"``.
        state: The live :class:`SimulatorState` (assign ``state.config`` to reconfigure).
    """

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        """Bind the socket and prepare (not start) the server."""
        self._socket = bind_socket(host, port)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self.state: SimulatorState = app.state.simulator
        self._server = build_server(app, log_level="warning", embedded=True)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"simulator-{bound_port}",
            daemon=True,
        )

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

    def start(self) -> None:
        """Start serving and wait until the server accepts connections.

        Raises:
            RuntimeError: If the server did not start within ``STARTUP_TIMEOUT_S``.
        """
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulator failed to start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server, join its thread and release the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join()
        self._socket.close()


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
