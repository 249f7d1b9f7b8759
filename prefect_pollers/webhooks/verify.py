"""Verifying a callback before anything else is done with it.

Two schemes (:data:`~prefect_pollers.providers.contract.CallbackScheme`):

- ``standard-webhooks``: the ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature`` headers, an HMAC-SHA256 over id, timestamp and body under the
  block's secret, checked by the maintained ``standardwebhooks`` package (timestamps
  outside ±5 minutes are refused there);
- ``capability-url``: the per-job token in the URL, checked in constant time
  (:mod:`prefect_pollers.webhooks.urls`).

Then the body must be a JSON object naming a job, and a delivery id (the
``webhook-id``, or a digest of the token and body) seen in the last
``replay_window_s`` is refused as a replay. A refusal is a :class:`Rejection`: an
HTTP status and a reason that names no secret.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import standardwebhooks

from prefect_pollers.engine import JobStatus, PollerError
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.callbacks import CallbackCredentials
from prefect_pollers.webhooks.urls import token_nonce, valid_flow_run_segment

REPLAY_WINDOW_S = 900.0
"""How long a delivery id is remembered (longer than the ±5 min timestamp tolerance)."""
MAX_REMEMBERED = 200_000
"""The most delivery ids remembered."""


class Rejection(Exception):
    """A callback refused: the HTTP status to answer and why (no secret in it).

    Attributes:
        status: The HTTP status (4xx).
        reason: A short, secret-free reason, for the response and the log.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class VerifiedCallback:
    """A callback that passed every check.

    Attributes:
        provider: The provider's short name.
        flow_run: The flow-run segment of its URL (a flow run id, or ``-``).
        job_id: The job it names.
        delivery_id: Its ``webhook-id``, or a digest of its token and body.
        nonce: The capability token's nonce (None for a signed callback).
        status: Its own status, when the block trusts signed callbacks.
    """

    provider: str
    flow_run: str
    job_id: str
    delivery_id: str
    nonce: str | None
    status: JobStatus | None


class CallbackVerifier:
    """Checks callbacks for a set of blocks; remembers delivery ids to refuse replays.

    Args:
        blocks: The blocks whose callbacks are received (one per provider name).
        replay_window_s: How long a delivery id is remembered.
        now: Monotonic seconds (tests pass their own).

    Raises:
        ValueError: two blocks of one provider name, or a block with callbacks off.
    """

    def __init__(
        self,
        blocks: Sequence[JobApiCredentials[Any]],
        *,
        replay_window_s: float = REPLAY_WINDOW_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blocks: dict[str, CallbackCredentials[Any]] = {}
        for block in blocks:
            if block.provider in self._blocks:
                raise ValueError(f"two blocks for provider {block.provider!r}: give one")
            if not isinstance(block, CallbackCredentials) or block.callback_spec() is None:
                raise ValueError(
                    f"{block.provider}: callbacks are off (set callback_base_url and "
                    "webhook_secret on the block)"
                )
            self._blocks[block.provider] = block
        self._replay_window_s = replay_window_s
        self._now = now
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def providers(self) -> list[str]:
        """The providers whose callbacks are received."""
        return list(self._blocks)

    def verify(
        self,
        provider: str,
        flow_run: str,
        token: str | None,
        headers: Mapping[str, str],
        body: bytes,
    ) -> VerifiedCallback:
        """Check one callback; raise :class:`Rejection` for anything wrong with it."""
        block = self._blocks.get(provider)
        if block is None or not valid_flow_run_segment(flow_run):
            raise Rejection(404, "unknown callback URL")
        spec = block.callback_spec()
        if spec is None or block.webhook_secret is None:  # checked when built
            raise Rejection(404, "unknown callback URL")
        secret = block.webhook_secret.get_secret_value()
        nonce = None
        if spec.scheme == "capability-url":
            nonce = token_nonce(secret, provider, flow_run, token) if token else None
            if nonce is None:
                raise Rejection(404, "unknown callback token")
        else:
            if token is not None:
                raise Rejection(404, "unknown callback URL")
            _check_signature(secret, headers, body)
        try:
            parsed = json.loads(body)
        except ValueError:
            raise Rejection(400, "the body is not JSON") from None
        if not isinstance(parsed, dict):
            raise Rejection(400, "the body is not a JSON object")
        job_id = spec.job_id_of(parsed)
        if job_id is None:
            raise Rejection(422, f"the body names no job at {spec.job_id_field!r}")
        if spec.scheme == "standard-webhooks":
            delivery_id = "webhook-id:" + _header(headers, "webhook-id")
        else:
            delivery_id = "sha256:" + hashlib.sha256(f"{token}\0".encode() + body).hexdigest()
        self._remember(delivery_id)
        status = None
        if block.trust_signed_callbacks and spec.scheme == "standard-webhooks":
            try:
                status = block.contract().callback_status(provider, job_id, parsed)
            except PollerError:
                status = None  # no readable status: the wait confirms with a poll
        return VerifiedCallback(provider, flow_run, job_id, delivery_id, nonce, status)

    def _remember(self, delivery_id: str) -> None:
        now = self._now()
        with self._lock:
            while self._seen and (
                len(self._seen) >= MAX_REMEMBERED
                or next(iter(self._seen.values())) < now - self._replay_window_s
            ):
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                raise Rejection(409, "replayed callback (its delivery id was seen)")
            self._seen[delivery_id] = now


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


def _check_signature(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Verify a Standard Webhooks signature with the ``standardwebhooks`` package."""
    wanted = ("webhook-id", "webhook-timestamp", "webhook-signature")
    if not all(_header(headers, name) for name in wanted):
        raise Rejection(401, "missing signature headers")
    try:
        standardwebhooks.Webhook(secret).verify(
            body, {name: _header(headers, name) for name in wanted}, json_parse=False
        )
    except standardwebhooks.WebhookVerificationError as exc:
        text = str(exc)
        if "timestamp too" in text:
            raise Rejection(401, "timestamp outside the 5-minute tolerance") from None
        raise Rejection(401, "bad signature") from None
    except ValueError:  # a malformed header or a body that is not UTF-8
        raise Rejection(401, "bad signature") from None
