"""Checking a callback's signature, under each signed scheme of the providers' ones.

The schemes are data (:mod:`prefect_pollers.providers.signatures`).

Each check answers with the callback's delivery id (what the replay memory claims)
or raises :class:`Rejection`. Standard Webhooks goes through the maintained
``standardwebhooks`` package, HMAC through the standard library's ``hmac``, Ed25519
through ``cryptography``; signatures are compared in constant time, and timestamps
are checked against the scheme's tolerance before any key is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

import standardwebhooks
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from prefect_pollers.providers.signatures import Ed25519Jwks, HmacSignature, signed_message
from prefect_pollers.webhooks.jwks import JwksKeys


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


def header(headers: Mapping[str, str], name: str) -> str:
    """The value of header ``name`` (any case), or ``""``."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return ""


def check_standard_webhooks(secret: str, headers: Mapping[str, str], body: bytes) -> str:
    """Verify a Standard Webhooks signature; the delivery id is ``webhook-id``."""
    wanted = ("webhook-id", "webhook-timestamp", "webhook-signature")
    if not all(header(headers, name) for name in wanted):
        raise Rejection(401, "missing signature headers")
    try:
        standardwebhooks.Webhook(secret).verify(
            body, {name: header(headers, name) for name in wanted}, json_parse=False
        )
    except standardwebhooks.WebhookVerificationError as exc:
        if "timestamp too" in str(exc):
            raise Rejection(401, "timestamp outside the 5-minute tolerance") from None
        raise Rejection(401, "bad signature") from None
    except ValueError:  # a malformed header or a body that is not UTF-8
        raise Rejection(401, "bad signature") from None
    return "webhook-id:" + header(headers, "webhook-id")


def check_hmac(
    scheme: HmacSignature, secret: str, headers: Mapping[str, str], body: bytes, now: float
) -> str:
    """Verify an HMAC signature; the delivery id is the id header's, else the signature's."""
    value = header(headers, scheme.header)
    if not value:
        raise Rejection(401, "missing signature headers")
    if scheme.form == "stripe":
        fields = [part.strip().partition("=") for part in value.split(",")]
        timestamp = next((v for k, _, v in fields if k == "t"), "")
        candidates = [v for k, _, v in fields if k == scheme.prefix]
    else:
        timestamp = header(headers, scheme.timestamp_header) if scheme.timestamp_header else ""
        candidates = [value.removeprefix(scheme.prefix)] if value.startswith(scheme.prefix) else []
    if scheme.timed:
        check_timestamp(timestamp, now, scheme.tolerance_s)
    delivery_id = header(headers, scheme.id_header) if scheme.id_header else ""
    message = signed_message(
        scheme.signed,
        body,
        timestamp=timestamp,
        delivery_id=delivery_id,
        header=lambda name: header(headers, name),
    )
    expected = hmac.new(hmac_key(scheme, secret), message, scheme.digest).digest()
    if not any(
        hmac.compare_digest(expected, decoded)
        for decoded in (decode(c, scheme.encoding) for c in candidates)
        if decoded is not None
    ):
        raise Rejection(401, "bad signature")
    if delivery_id:
        return "id:" + delivery_id
    return "signature:" + hashlib.sha256(value.encode()).hexdigest()


def hmac_key(scheme: HmacSignature, secret: str) -> bytes:
    """The HMAC key ``secret`` stands for under ``scheme``."""
    if scheme.secret_encoding == "utf-8":
        return secret.encode()
    try:
        return base64.b64decode(secret.rpartition("_")[2], validate=True)
    except binascii.Error:
        raise ValueError("webhook_secret is not base64 (after its prefix)") from None


async def check_ed25519(
    scheme: Ed25519Jwks, keys: JwksKeys, headers: Mapping[str, str], body: bytes, now: float
) -> str:
    """Verify an Ed25519 signature under the JWKS; the delivery id is the id header's.

    A signature no cached key verifies fetches the JWKS again (a rotated key), as
    often as the cache's cooldown allows.
    """
    names = (scheme.signature_header, scheme.timestamp_header, scheme.id_header)
    signature_text, timestamp, delivery_id = (header(headers, name) for name in names)
    if not (signature_text and timestamp and delivery_id):
        raise Rejection(401, "missing signature headers")
    check_timestamp(timestamp, now, scheme.tolerance_s)
    signature = decode(signature_text, scheme.signature_encoding)
    if signature is None or len(signature) != 64:
        raise Rejection(401, "bad signature")
    message = signed_message(
        scheme.signed,
        body,
        timestamp=timestamp,
        delivery_id=delivery_id,
        header=lambda name: header(headers, name),
    )

    def verifies(candidates: list[Ed25519PublicKey]) -> bool:
        for key in candidates:
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            return True
        return False

    cached = await keys.keys()
    seen = keys.fetches
    if not verifies(cached) and not (await keys.refresh(seen) and verifies(await keys.keys())):
        raise Rejection(401, "bad signature (under every key of the JWKS)")
    return "id:" + delivery_id


def check_timestamp(timestamp: str, now: float, tolerance_s: float) -> None:
    """Refuse a timestamp (epoch seconds) that is not a number or is out of tolerance."""
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise Rejection(401, "missing or malformed timestamp")
    stamp = int(timestamp)
    if abs(now - stamp) > tolerance_s:
        raise Rejection(401, f"timestamp outside the {tolerance_s:g} s tolerance")


def decode(text: str, encoding: str) -> bytes | None:
    """``text`` decoded from hex or base64, or None when it is not."""
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None
