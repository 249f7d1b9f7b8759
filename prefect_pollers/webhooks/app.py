"""The webhook receiver: an ASGI app that verifies callbacks and ends the waits they name.

``POST /hooks/{provider}/{flow run id or -}[/{token}]``: the body is read up to a
size limit and within a time limit, verified (:mod:`prefect_pollers.webhooks.verify`),
its delivery id claimed in the replay memory (:mod:`prefect_pollers.ledger.replays`),
then delivered to the waits of this process
(:data:`~prefect_pollers.webhooks.inbox.INBOX`) and, for waits in other processes,
emitted as a ``prefect-pollers.job.callback`` event on the job's resource, related
to the flow run. Anything wrong is answered with a 4xx (503 when the replay memory
cannot be reached) and one log line without secrets, never a crash. ``GET /health``
gives counters.

Run it with ``prefect-pollers webhooks serve``, or mount :func:`create_webhook_app`
in your own ASGI app. Needs the ``webhooks`` extra (starlette, uvicorn).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from prefect_pollers.events.jobs import emit_callback
from prefect_pollers.ledger.replays import LedgerReplays
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.callback_urls import NO_FLOW_RUN
from prefect_pollers.webhooks.inbox import INBOX, CallbackInbox
from prefect_pollers.webhooks.signatures import Rejection
from prefect_pollers.webhooks.verify import CallbackVerifier, VerifiedCallback

MAX_BODY_BYTES = 256 * 1024
"""The largest callback body accepted (413 beyond)."""
BODY_TIMEOUT_S = 10.0
"""The most seconds a client may take to send a body (408 beyond)."""

_log = logging.getLogger("prefect_pollers.webhooks")


class ReceiverStats:
    """What the receiver did, safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.deliveries: Counter[str] = Counter()

    def count(self, *, rejected: str | None = None, delivery: str | None = None) -> None:
        """Count an accepted callback (with its delivery result) or a rejection."""
        with self._lock:
            if rejected is not None:
                self.rejected[rejected] += 1
            else:
                self.accepted += 1
                self.deliveries[delivery or "none"] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON."""
        with self._lock:
            return {
                "accepted": self.accepted,
                "rejected": dict(self.rejected),
                "deliveries": dict(self.deliveries),
            }


async def _read_body_within(request: Request, limit: int, timeout_s: float) -> bytes:
    try:
        return await asyncio.wait_for(_read_body(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise Rejection(408, f"the body was not received within {timeout_s:g} s") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejection(413, f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejection(413, f"the body is over {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Rejection(400, "the client went away before the body ended") from None
    return b"".join(chunks)


def create_webhook_app(
    blocks: Sequence[JobApiCredentials[Any]],
    *,
    inbox: CallbackInbox = INBOX,
    emit_events: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout_s: float = BODY_TIMEOUT_S,
    replays: LedgerReplays | None = None,
    jwks_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The receiver of ``blocks``' callbacks.

    Serve it with :func:`~prefect_pollers.ops.serving.uvicorn_server`, which also times
    out clients that are slow to send their request's headers.

    Args:
        blocks: One block per provider whose callbacks it receives (callbacks on,
            with the same ``webhook_secret`` the waiting side uses).
        inbox: Where callbacks are delivered in this process.
        emit_events: Also emit each callback as a Prefect event, for waits in other
            processes (needs a Prefect API).
        max_body_bytes: The largest body accepted.
        body_timeout_s: The most seconds a client may take to send the body.
        replays: The replay memory (None: the ledger of the settings).
        jwks_transport: The httpx transport JWKS are fetched through (None: the network).

    Raises:
        ValueError: see :class:`CallbackVerifier`.
    """
    verifier = CallbackVerifier(blocks, jwks_transport=jwks_transport)
    memory = replays or LedgerReplays()
    stats = ReceiverStats()

    async def claim(callback: VerifiedCallback) -> None:
        delivery = callback.delivery
        try:
            claimed = await memory.claim(
                delivery.provider, delivery.delivery_id, callback.remember_until
            )
        except Exception as exc:  # the ledger is down: the provider retries later
            _log.error("the replay memory (ledger) failed: %s", type(exc).__name__)
            raise Rejection(503, "the replay memory is unavailable; retry later") from None
        if not claimed:
            raise Rejection(409, "replayed callback (its delivery id was seen)")

    async def receive(request: Request) -> JSONResponse:
        provider = request.path_params["provider"]
        flow_run = request.path_params["flow_run"]
        token = request.path_params.get("token")
        try:
            body = await _read_body_within(request, max_body_bytes, body_timeout_s)
            callback = await verifier.verify(provider, flow_run, token, request.headers, body)
            await claim(callback)
        except Rejection as rejection:
            known = provider if provider in verifier.providers else "unknown provider"
            _log.warning(
                "callback rejected (%d, %s): %s", rejection.status, known, rejection.reason
            )
            stats.count(rejected=rejection.reason)
            return JSONResponse({"error": rejection.reason}, rejection.status)
        delivery = callback.delivery
        result = inbox.deliver(delivery)
        if emit_events:
            _emit(callback)
        stats.count(delivery=result)
        _log.debug("callback for %s job %s: %s", delivery.provider, delivery.job_id, result)
        return JSONResponse({"accepted": True}, 200)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "providers": verifier.providers, **stats.snapshot()})

    app = Starlette(
        routes=[
            Route("/hooks/{provider}/{flow_run}", receive, methods=["POST"]),
            Route("/hooks/{provider}/{flow_run}/{token}", receive, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.receiver_stats = stats
    app.state.verifier = verifier
    return app


def _emit(callback: VerifiedCallback) -> None:
    delivery = callback.delivery
    emit_callback(
        provider=delivery.provider,
        job_id=delivery.job_id,
        flow_run=None if callback.flow_run == NO_FLOW_RUN else callback.flow_run,
        delivery_id=delivery.delivery_id,
        nonce=delivery.nonce,
        status=delivery.status,
        attestation=delivery.attestation,
    )
