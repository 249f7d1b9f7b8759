"""Verifying a callback before anything else is done with it.

Two schemes (:data:`~prefect_pollers.providers.contract.CallbackScheme`):

- ``standard-webhooks``: the ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature`` headers, an HMAC-SHA256 over id, timestamp and body under the
  block's secret, checked by the maintained ``standardwebhooks`` package (timestamps
  outside ±5 minutes are refused there);
- ``capability-url``: the per-job token in the URL, checked in constant time, and
  refused after its expiry (:mod:`prefect_pollers.providers.callback_urls`).

Then the body must be a JSON object naming a job. Its delivery id (the
``webhook-id``, or a digest of the token and body) is what the receiver's replay
memory claims, per provider (:mod:`prefect_pollers.ledger.replays`). A refusal is a
:class:`Rejection`: an HTTP status and a reason that names no secret.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import standardwebhooks

from prefect_pollers.engine import PollerError
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.callback_urls import token_claim, valid_flow_run_segment
from prefect_pollers.providers.callbacks import CallbackCredentials
from prefect_pollers.webhooks.inbox import Delivery

REPLAY_WINDOW_S = 900.0
"""How long a delivery id is remembered at least (longer than the ±5 min tolerance)."""


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
    """A callback that passed every check (replays aside).

    Attributes:
        flow_run: The flow-run segment of its URL (a flow run id, or ``-``).
        delivery: What is delivered to waits (attested, when its block trusts
            signed callbacks and it carries a status).
        remember_until: Until when (epoch seconds) its delivery id must be
            remembered to refuse a replay: past the signature's timestamp tolerance,
            or the capability token's expiry.
    """

    flow_run: str
    delivery: Delivery
    remember_until: float


class CallbackVerifier:
    """Checks callbacks for a set of blocks (one per provider name).

    Args:
        blocks: The blocks whose callbacks are received.
        now: Epoch seconds (tests pass their own): token expiries are wall-clock times.

    Raises:
        ValueError: two blocks of one provider name, or a block with callbacks off.
    """

    def __init__(
        self,
        blocks: Sequence[JobApiCredentials[Any]],
        *,
        now: Callable[[], float] = time.time,
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
        self._now = now

    @property
    def providers(self) -> list[str]:
        """The provider names whose callbacks are received."""
        return sorted(self._blocks)

    def verify(
        self,
        provider: str,
        flow_run: str,
        token: str | None,
        headers: Mapping[str, str],
        body: bytes,
    ) -> VerifiedCallback:
        """Check one callback; raise :class:`Rejection` for anything wrong with it.

        Replays are not checked here: the caller claims :attr:`VerifiedCallback.delivery_id`
        in its replay memory (:class:`~prefect_pollers.ledger.replays.LedgerReplays`).
        """
        block = self._blocks.get(provider)
        if block is None or not valid_flow_run_segment(flow_run):
            raise Rejection(404, "unknown callback URL")
        spec = block.callback_spec()
        if spec is None or block.webhook_secret is None:  # checked when built
            raise Rejection(404, "unknown callback URL")
        secret = block.webhook_secret.get_secret_value()
        now = self._now()
        nonce = None
        remember_until = now + REPLAY_WINDOW_S
        if spec.scheme == "capability-url":
            claim = token_claim(secret, provider, flow_run, token) if token else None
            if claim is None:
                raise Rejection(404, "unknown callback token")
            if claim.expires_at is not None:
                if now > claim.expires_at:
                    raise Rejection(410, "the callback token expired with its job's deadline")
                remember_until = max(remember_until, claim.expires_at)
            nonce = claim.nonce
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
        delivery = Delivery(provider, job_id, delivery_id, nonce)
        key = block.attestation_key()
        if key is not None:
            try:
                status = block.contract().callback_status(provider, job_id, parsed)
            except PollerError:
                status = None  # no readable status: the wait confirms with a poll
            if status is not None:
                delivery = replace(delivery, status=status).attest(key)
        return VerifiedCallback(flow_run, delivery, remember_until)


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
