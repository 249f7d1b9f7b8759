"""How a callback proves where it comes from, as data: the signature schemes.

:data:`SignatureScheme` is one of four models, told apart by ``kind``:

- :class:`StandardWebhooks` (``standard-webhooks``): the Standard Webhooks headers,
  HMAC-SHA256 under the block's ``whsec_...`` secret;
- :class:`CapabilityUrl` (``capability-url``): for APIs that sign nothing, an
  unguessable per-job token in the callback URL;
- :class:`HmacSignature` (``hmac``): an HMAC of a message made from the request (a
  template over ``{body}``, ``{timestamp}``, ``{id}``, ...) in one header, with its
  digest, encoding, prefix and the Stripe ``t=...,v1=...`` form as fields: GitHub
  (:data:`GITHUB`), Stripe (:data:`STRIPE`) and their kin are declarations;
- :class:`Ed25519Jwks` (``ed25519-jwks``): an Ed25519 signature valid under any key of
  a JWKS the provider publishes (fal: :data:`FAL`).

A block field takes a model or, as before, the name ``"standard-webhooks"`` or
``"capability-url"`` (:func:`as_scheme`). Schemes hold no secret: a shared secret
is the block's ``webhook_secret`` (or what its :meth:`signing_secret` fetches).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_TOLERANCE_S = 300.0
"""How far a signed timestamp may be from the receiver's clock (±5 minutes)."""
_PLACEHOLDER = re.compile(r"\{(body|body_sha256|timestamp|id|header:[A-Za-z0-9-]+)\}")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
_LOOPBACK_NAMES = ("localhost",)


class StandardWebhooks(BaseModel):
    """The Standard Webhooks scheme (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

    Checked by the maintained ``standardwebhooks`` package with the block's
    ``whsec_...`` secret; timestamps outside ±5 minutes are refused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["standard-webhooks"] = "standard-webhooks"


class CapabilityUrl(BaseModel):
    """A per-job token in the callback URL, for APIs that sign nothing.

    The token is an HMAC under the block's ``webhook_secret`` (32+ characters),
    refused after its job's deadline plus 5 minutes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["capability-url"] = "capability-url"


class HmacSignature(BaseModel):
    """An HMAC of a message made from the request, in one header.

    Attributes:
        header: The header that carries the signature (``X-Hub-Signature-256``).
        signed: What is signed: a template over ``{body}`` (the raw body),
            ``{body_sha256}`` (its hex SHA-256), ``{timestamp}``, ``{id}`` and
            ``{header:Name}`` (any header's value).
        digest: ``sha256`` or ``sha1``.
        encoding: How the signature is written: ``hex`` or ``base64``.
        prefix: Text before the signature in the header (``sha256=``); for the
            ``stripe`` form, the name of the signature's field (``v1``).
        form: ``plain`` (the header is ``prefix`` + signature) or ``stripe``
            (``t=<timestamp>,v1=<signature>[,v1=...]``: the timestamp comes from it).
        timestamp_header: Where the timestamp is, for the ``plain`` form (None:
            unsigned time, and no tolerance check).
        id_header: Where a delivery id is (``X-GitHub-Delivery``); None: the replay
            memory keys on the signature.
        tolerance_s: How far a timestamp may be from the receiver's clock.
        secret_encoding: How the key is read from ``webhook_secret``: ``utf-8``
            (GitHub, Stripe: the text itself) or ``base64`` (after an optional
            ``whsec_``-style prefix up to the last underscore).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["hmac"] = "hmac"
    header: str
    signed: str = "{body}"
    digest: Literal["sha256", "sha1"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    form: Literal["plain", "stripe"] = "plain"
    timestamp_header: str | None = None
    id_header: str | None = None
    tolerance_s: float = Field(default=DEFAULT_TOLERANCE_S, gt=0.0)
    secret_encoding: Literal["utf-8", "base64"] = "utf-8"

    @field_validator("header", "timestamp_header", "id_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.match(value):
            raise ValueError(f"not a header name: {value!r}")
        return value

    @field_validator("signed")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)

    @property
    def timed(self) -> bool:
        """Whether requests carry a signed timestamp (checked against the tolerance)."""
        return self.form == "stripe" or self.timestamp_header is not None


class Ed25519Jwks(BaseModel):
    """An Ed25519 signature, valid under any key of the provider's JWKS.

    Keys (``kty`` ``OKP``, ``crv`` ``Ed25519``, ``x`` base64url) are fetched with
    httpx, kept ``jwks_ttl_s``, and fetched again when a signature verifies under
    none of them (a rotation), at most once per ``refetch_cooldown_s``: a flood of
    forged callbacks costs the JWKS URL one request per cooldown.

    Attributes:
        jwks_url: The JWKS: an ``https`` URL (``http`` only on loopback), or a path
            (``/.well-known/jwks.json``) on the origin of the block's ``base_url``.
        signature_header: The header that carries the signature.
        signature_encoding: ``hex`` or ``base64``.
        signed: What is signed, a template as in :class:`HmacSignature`.
        timestamp_header: Where the timestamp (epoch seconds) is.
        id_header: Where the delivery id is (for the replay memory).
        tolerance_s: How far the timestamp may be from the receiver's clock.
        jwks_ttl_s: How long fetched keys are used before they are fetched again.
        refetch_cooldown_s: The least time between two fetches of the JWKS.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ed25519-jwks"] = "ed25519-jwks"
    jwks_url: str
    signature_header: str
    signature_encoding: Literal["hex", "base64"] = "hex"
    signed: str
    timestamp_header: str
    id_header: str
    tolerance_s: float = Field(default=DEFAULT_TOLERANCE_S, gt=0.0)
    jwks_ttl_s: float = Field(default=3600.0, gt=0.0)
    refetch_cooldown_s: float = Field(default=30.0, ge=0.0)

    @field_validator("signature_header", "timestamp_header", "id_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError(f"not a header name: {value!r}")
        return value

    @field_validator("signed")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str) -> str:
        if value.startswith("/"):
            return value
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and is_loopback(parts.hostname or ""):
            return value
        raise ValueError(
            f"jwks_url must be an https URL (http only on loopback) or a path on the "
            f"API's origin, got {value!r}"
        )

    def resolved_jwks_url(self, base_url: str) -> str:
        """The JWKS URL, a path resolved on the origin of ``base_url``."""
        if not self.jwks_url.startswith("/"):
            return self.jwks_url
        parts = urlsplit(base_url)
        return f"{parts.scheme}://{parts.netloc}{self.jwks_url}"


SignatureScheme = Annotated[
    StandardWebhooks | CapabilityUrl | HmacSignature | Ed25519Jwks,
    Field(discriminator="kind"),
]
"""Any of the schemes, told apart by ``kind``."""


def as_scheme(value: Any) -> Any:
    """A scheme name (``"standard-webhooks"``, ``"capability-url"``) as its model's data.

    Used as a ``mode="before"`` validator, so that blocks saved with a name still load.
    """
    if isinstance(value, str):
        return {"kind": value}
    return value


def check_template(template: str) -> str:
    """``template`` if each of its ``{...}`` is a known placeholder, else ValueError."""
    rest = _PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        raise ValueError(
            f"unknown placeholder in {template!r}: use {{body}}, {{body_sha256}}, "
            "{timestamp}, {id} or {header:Name}"
        )
    return template


def signed_message(
    template: str,
    body: bytes,
    *,
    timestamp: str = "",
    delivery_id: str = "",
    header: Any = None,
) -> bytes:
    """The bytes a template says are signed, for one request.

    Args:
        template: A template checked by :func:`check_template`.
        body: The raw body.
        timestamp: The value of ``{timestamp}``.
        delivery_id: The value of ``{id}``.
        header: Looks a header's value up by name (``{header:Name}``).
    """
    parts: list[bytes] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(template[last : match.start()].encode())
        name = match.group(1)
        if name == "body":
            parts.append(body)
        elif name == "body_sha256":
            parts.append(hashlib.sha256(body).hexdigest().encode())
        elif name == "timestamp":
            parts.append(timestamp.encode())
        elif name == "id":
            parts.append(delivery_id.encode())
        else:
            parts.append(str(header(name.removeprefix("header:")) if header else "").encode())
        last = match.end()
    parts.append(template[last:].encode())
    return b"".join(parts)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


GITHUB = HmacSignature(
    header="X-Hub-Signature-256", prefix="sha256=", id_header="X-GitHub-Delivery"
)
"""GitHub's webhooks: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``."""
STRIPE = HmacSignature(
    header="Stripe-Signature", signed="{timestamp}.{body}", form="stripe", prefix="v1"
)
"""Stripe's: ``Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">``."""
FAL = Ed25519Jwks(
    jwks_url="https://rest.alpha.fal.ai/.well-known/jwks.json",
    signature_header="X-Fal-Webhook-Signature",
    signed="{id}\n{header:X-Fal-Webhook-User-Id}\n{timestamp}\n{body_sha256}",
    timestamp_header="X-Fal-Webhook-Timestamp",
    id_header="X-Fal-Webhook-Request-Id",
)
"""fal.ai's: Ed25519 (hex) over request id, user id, timestamp and the body's SHA-256."""
