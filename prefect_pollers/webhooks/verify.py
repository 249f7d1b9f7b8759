"""Verifying a callback before anything else is done with it.

The block's scheme (:data:`~prefect_pollers.providers.signatures.SignatureScheme`)
says how: a per-job ``capability-url`` token, checked in constant time and refused
after its expiry (:mod:`prefect_pollers.providers.callback_urls`), or a signature
(Standard Webhooks, an HMAC header, Ed25519 under a JWKS) checked by
:mod:`prefect_pollers.webhooks.signatures`, timestamps within the scheme's tolerance.

Then the body must be a JSON object naming a job. Its delivery id (the signed id,
or a digest of the signature, or of the token and body) is what the receiver's
replay memory claims, per provider (:mod:`prefect_pollers.ledger.replays`). A refusal
is a :class:`~prefect_pollers.webhooks.signatures.Rejection`: an HTTP status and a
reason that names no secret.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from prefect_pollers.engine import PollerError
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.callback_urls import token_claim, valid_flow_run_segment
from prefect_pollers.providers.callbacks import CallbackCredentials
from prefect_pollers.providers.contract import CallbackSpec
from prefect_pollers.providers.signatures import (
    CapabilityUrl,
    Ed25519Jwks,
    HmacSignature,
    SignatureScheme,
    StandardWebhooks,
)
from prefect_pollers.webhooks.inbox import Delivery
from prefect_pollers.webhooks.jwks import JwksKeys
from prefect_pollers.webhooks.signatures import (
    Rejection,
    check_ed25519,
    check_hmac,
    check_standard_webhooks,
)

REPLAY_WINDOW_S = 900.0
"""How long a delivery id is remembered at least (longer than the ±5 min tolerance)."""
UNTIMED_REPLAY_WINDOW_S = 7 * 86400.0
"""How long the delivery id of a scheme that signs no timestamp is remembered."""


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
        now: Epoch seconds (tests pass their own): token expiries and signed
            timestamps are wall-clock times.
        jwks_transport: The httpx transport JWKS are fetched through (tests pass
            their own; None: the network).

    Raises:
        ValueError: two blocks of one provider name, or a block with callbacks off.
    """

    def __init__(
        self,
        blocks: Sequence[JobApiCredentials[Any]],
        *,
        now: Callable[[], float] = time.time,
        jwks_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._blocks: dict[str, CallbackCredentials[Any]] = {}
        # Read once: an HttpJobApi builds its contract anew on each call, which cost
        # more than checking an Ed25519 signature.
        self._specs: dict[str, CallbackSpec] = {}
        self._attestation_keys: dict[str, bytes | None] = {}
        self.jwks: dict[str, JwksKeys] = {}
        """The JWKS cache of each provider whose scheme is ``ed25519-jwks``."""
        for block in blocks:
            if block.provider in self._blocks:
                raise ValueError(f"two blocks for provider {block.provider!r}: give one")
            if (
                not isinstance(block, CallbackCredentials)
                or (spec := block.callback_spec()) is None
            ):
                raise ValueError(
                    f"{block.provider}: callbacks are off (set callback_base_url and "
                    "webhook_secret on the block)"
                )
            self._blocks[block.provider] = block
            self._specs[block.provider] = spec
            self._attestation_keys[block.provider] = block.attestation_key()
            scheme = spec.scheme
            if isinstance(scheme, Ed25519Jwks):
                self.jwks[block.provider] = JwksKeys(
                    scheme.resolved_jwks_url(block.base_url),
                    ttl_s=scheme.jwks_ttl_s,
                    cooldown_s=scheme.refetch_cooldown_s,
                    transport=jwks_transport,
                )
        self._now = now

    @property
    def providers(self) -> list[str]:
        """The provider names whose callbacks are received."""
        return sorted(self._blocks)

    async def verify(
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
        spec = self._specs[provider]
        scheme = spec.scheme
        now = self._now()
        nonce = None
        if isinstance(scheme, CapabilityUrl):
            if block.webhook_secret is None:  # checked when built
                raise Rejection(404, "unknown callback URL")
            secret = block.webhook_secret.get_secret_value()
            claim = token_claim(secret, provider, flow_run, token) if token else None
            if claim is None:
                raise Rejection(404, "unknown callback token")
            remember_until = now + REPLAY_WINDOW_S
            if claim.expires_at is not None:
                if now > claim.expires_at:
                    raise Rejection(410, "the callback token expired with its job's deadline")
                remember_until = max(remember_until, claim.expires_at)
            nonce = claim.nonce
            delivery_id = "sha256:" + hashlib.sha256(f"{token}\0".encode() + body).hexdigest()
        else:
            if token is not None:
                raise Rejection(404, "unknown callback URL")
            delivery_id, remember_until = await self._check(block, scheme, headers, body, now)
        try:
            parsed = json.loads(body)
        except ValueError:
            raise Rejection(400, "the body is not JSON") from None
        if not isinstance(parsed, dict):
            raise Rejection(400, "the body is not a JSON object")
        job_id = spec.job_id_of(parsed)
        if job_id is None:
            raise Rejection(422, f"the body names no job at {spec.job_id_field!r}")
        delivery = Delivery(provider, job_id, delivery_id, nonce)
        key = self._attestation_keys[provider]
        if key is not None:
            try:
                status = block.contract().callback_status(provider, job_id, parsed)
            except PollerError:
                status = None  # no readable status: the wait confirms with a poll
            if status is not None:
                delivery = replace(delivery, status=status).attest(key)
        return VerifiedCallback(flow_run, delivery, remember_until)

    async def _check(
        self,
        block: CallbackCredentials[Any],
        scheme: SignatureScheme,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
    ) -> tuple[str, float]:
        """Check a signed callback: its delivery id, and until when to remember it."""
        if isinstance(scheme, Ed25519Jwks):
            keys = self.jwks[block.provider]
            return await check_ed25519(scheme, keys, headers, body, now), now + REPLAY_WINDOW_S
        secret = await block.signing_secret()
        if secret is None:
            raise Rejection(503, "the signing secret is not available yet; retry later")
        if isinstance(scheme, StandardWebhooks):
            delivery_id = check_standard_webhooks(secret.get_secret_value(), headers, body)
            return delivery_id, now + REPLAY_WINDOW_S
        if isinstance(scheme, HmacSignature):
            delivery_id = check_hmac(scheme, secret.get_secret_value(), headers, body, now)
            window = max(REPLAY_WINDOW_S, 2 * scheme.tolerance_s + 60.0)
            return delivery_id, now + (window if scheme.timed else UNTIMED_REPLAY_WINDOW_S)
        raise Rejection(404, "unknown callback URL")  # capability URLs are checked above
