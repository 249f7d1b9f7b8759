"""Serving an ASGI app with uvicorn on loopback: the simulator's and the webhook receiver's.

The listening socket is bound before uvicorn starts and handed to it, so a free port
(port 0) is known at once and never raced for. Needs uvicorn (the ``simulator`` or
``webhooks`` extra).

Slow clients are timed out: uvicorn closes idle keep-alive connections
(``timeout_keep_alive``) and bounds the size of a request's headers
(``h11_max_incomplete_event_size``) but has no timeout for receiving them, so a
connection that sends half a request line and stalls would stay open forever; the
h11 protocol here closes a connection whose request headers are not all in within
``header_timeout_s``. A body that is slow to come is the app's to time out (the
webhook receiver answers 408).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

STARTUP_TIMEOUT_S = 10.0
HEADER_TIMEOUT_S = 10.0
"""The most seconds a client may take to send a request's line and headers."""
MAX_HEADER_BYTES = 16 * 1024
"""The largest request line and headers accepted (uvicorn answers 400 beyond)."""


class _HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers are late."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        # Armed from a connection's first byte, or a new request's, until h11 has
        # its headers; an idle keep-alive connection is uvicorn's to close.
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            self._stop_header_timer()
        elif self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def _h11_protocol(header_timeout_s: float) -> type[H11Protocol]:
    return type(
        "HeaderTimeoutH11Protocol",
        (_HeaderTimeoutH11Protocol,),
        {"header_timeout_s": header_timeout_s},
    )


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


def uvicorn_server(
    app: Any, *, log_level: str, embedded: bool, header_timeout_s: float = HEADER_TIMEOUT_S
) -> uvicorn.Server:
    """A uvicorn server for ``app`` without access logs (URLs may carry tokens).

    Args:
        app: The ASGI app.
        log_level: uvicorn's log level.
        embedded: True inside another program (tests): leave its logging setup alone.
        header_timeout_s: The most seconds a client may take to send a request's
            headers (its connection is closed then).
    """
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        log_config=None if embedded else uvicorn.config.LOGGING_CONFIG,
        http=_h11_protocol(header_timeout_s),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
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
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "server",
        header_timeout_s: float = HEADER_TIMEOUT_S,
    ) -> None:
        """Bind the socket and prepare (not start) the server; its thread is ``name-<port>``."""
        self._socket = bind_socket(host, port)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self._server = uvicorn_server(
            app, log_level="warning", embedded=True, header_timeout_s=header_timeout_s
        )
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
