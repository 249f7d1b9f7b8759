"""Serving an ASGI app with uvicorn on loopback: the simulator's and the webhook receiver's.

The listening socket is bound before uvicorn starts and handed to it, so a free port
(port 0) is known at once and never raced for. Needs uvicorn (the ``simulator`` or
``webhooks`` extra).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any

import uvicorn

STARTUP_TIMEOUT_S = 10.0


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


def bind_or_report(program: str, host: str, port: int) -> socket.socket | None:
    """:func:`bind_socket` for a command line: None after saying on stderr why it failed."""
    try:
        return bind_socket(host, port)
    except OSError as exc:
        print(f"{program}: cannot bind {host}:{port}: {exc}", file=sys.stderr)
        return None


def uvicorn_server(app: Any, *, log_level: str, embedded: bool) -> uvicorn.Server:
    """A uvicorn server for ``app`` without access logs (URLs may carry tokens).

    Args:
        app: The ASGI app.
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
    return uvicorn.Server(config)


class BackgroundServer:
    """An ASGI app served on loopback by a background thread.

    Attributes:
        url: The server's root URL, e.g. ``"http://127.0.0.1:54321"``.
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, name: str = "server"
    ) -> None:
        """Bind the socket and prepare (not start) the server; its thread is ``name-<port>``."""
        self._socket = bind_socket(host, port)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self._server = uvicorn_server(app, log_level="warning", embedded=True)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"{name}-{bound_port}",
            daemon=True,
        )

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
                raise RuntimeError(f"the server failed to start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server, join its thread and release the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join()
        self._socket.close()
