"""How the simulator signs callbacks, as the real senders document it, and its Ed25519 keys.

Four signings (``callback_signing`` in the config, per provider):

- ``standard-webhooks``: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``
  under the ``callback_secret`` (``whsec_...``), by the ``standardwebhooks`` package;
- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` under the
  ``callback_secret`` text, with an ``X-GitHub-Delivery`` id;
- ``stripe``: ``Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">``;
- ``ed25519``: fal's scheme, ``X-Fal-Webhook-Request-Id``, ``-User-Id``,
  ``-Timestamp`` and ``-Signature`` (hex Ed25519 over request id, user id, timestamp
  and the body's hex SHA-256, joined by newlines), under the simulator's own key,
  whose public half is served as a JWKS at ``GET /.well-known/jwks.json``.

:class:`SigningKeys` holds that key; ``POST /_sim/keys/rotate`` replaces it (the JWKS
then lists the new key and the previous one), ``GET /_sim/keys`` counts JWKS fetches.
This module signs on its own, from the providers' documentation: it shares no code
with the receiver that checks the signatures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from datetime import datetime
from typing import Any, Literal

import standardwebhooks
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SigningKind = Literal["standard-webhooks", "github", "stripe", "ed25519"]
SIM_USER_ID = "sim-user"
"""The user id the ``ed25519`` signing sends (fal sends the account's)."""
_SIGNATURE_HEADERS: dict[SigningKind, str] = {
    "standard-webhooks": "webhook-signature",
    "github": "X-Hub-Signature-256",
    "stripe": "Stripe-Signature",
    "ed25519": "X-Fal-Webhook-Signature",
}


class SigningKeys:
    """The simulator's Ed25519 signing key, its predecessor, and JWKS fetch counts.

    Keys derive from the seed and a generation number, so a run is reproducible.
    """

    def __init__(self, seed: int) -> None:
        """Start at generation 0 of ``seed``."""
        self._seed = seed
        self.generation = 0
        self.jwks_requests = 0
        self._keys = [self._key(0)]

    def _key(self, generation: int) -> Ed25519PrivateKey:
        material = hashlib.sha256(f"sim-ed25519:{self._seed}:{generation}".encode()).digest()
        return Ed25519PrivateKey.from_private_bytes(material)

    @property
    def current(self) -> Ed25519PrivateKey:
        """The key callbacks are signed with."""
        return self._keys[-1]

    def rotate(self) -> None:
        """Sign with a new key from now on; the JWKS keeps the previous one listed."""
        self.generation += 1
        self._keys = [*self._keys[-1:], self._key(self.generation)]

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWKS (``OKP``/``Ed25519``, ``x`` base64url)."""
        keys = []
        for key in self._keys:
            raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
            keys.append({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "use": "sig"})
        return {"keys": keys}


def sign(
    kind: SigningKind,
    secret: str | None,
    keys: SigningKeys,
    msg_id: str,
    stamp: datetime,
    body: bytes,
) -> dict[str, str]:
    """The headers that sign ``body`` under ``kind`` (none for an HMAC without a secret)."""
    ts = str(math.floor(stamp.timestamp()))
    if kind == "ed25519":
        digest = hashlib.sha256(body).hexdigest()
        message = "\n".join((msg_id, SIM_USER_ID, ts, digest)).encode()
        return {
            "X-Fal-Webhook-Request-Id": msg_id,
            "X-Fal-Webhook-User-Id": SIM_USER_ID,
            "X-Fal-Webhook-Timestamp": ts,
            "X-Fal-Webhook-Signature": keys.current.sign(message).hex(),
        }
    if secret is None:
        return {}
    if kind == "standard-webhooks":
        signature = standardwebhooks.Webhook(secret).sign(msg_id, stamp, body.decode())
        return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": signature}
    if kind == "github":
        mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Delivery": msg_id}
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={mac}"}


def forge(kind: SigningKind, headers: dict[str, str]) -> bool:
    """Replace the signature in ``headers`` by a wrong one; False when none is there."""
    name = _SIGNATURE_HEADERS[kind]
    if name not in headers:
        return False
    headers[name] = {
        "standard-webhooks": "v1," + "A" * 43 + "=",
        "github": "sha256=" + "0" * 64,
        "stripe": headers[name].partition(",")[0] + ",v1=" + "0" * 64,
        "ed25519": "00" * 64,
    }[kind]
    return True


def signing_routes(keys: Any) -> list[Route]:
    """The JWKS and the key controls; ``keys`` returns the live :class:`SigningKeys`."""

    async def jwks(request: Request) -> JSONResponse:
        """The public keys callbacks are signed with."""
        current: SigningKeys = keys()
        current.jwks_requests += 1
        return JSONResponse(current.jwks())

    async def rotate(request: Request) -> JSONResponse:
        """Sign with a new key from now on."""
        current: SigningKeys = keys()
        current.rotate()
        return JSONResponse({"generation": current.generation})

    async def counters(request: Request) -> JSONResponse:
        """The key's generation and how often the JWKS was fetched."""
        current: SigningKeys = keys()
        return JSONResponse(
            {"generation": current.generation, "jwks_requests": current.jwks_requests}
        )

    return [
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/_sim/keys/rotate", rotate, methods=["POST"]),
        Route("/_sim/keys", counters, methods=["GET"]),
    ]
