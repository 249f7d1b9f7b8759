"""Callback URLs and the capability tokens in them.

A callback URL is ``{callback_base_url}/hooks/{provider}/{flow run id or -}``, and
for the ``capability-url`` scheme (APIs that sign nothing, such as APIXO) one more
segment: a token ``{nonce}.{expiry}.{mac}``, where the expiry is the epoch second
after which the token is refused (the job's deadline; ``0``: never) and the MAC is
an HMAC-SHA256 of the provider, the flow run, the nonce and the expiry under the
block's webhook secret. Only someone who holds the secret can make a token the
receiver accepts, the receiver needs no list of tokens to check one (it may run in
another process or on another machine), and a token binds one job: the wait accepts
a callback only with its own nonce.

Tokens of the first version, ``{nonce}.{mac}`` (made before tokens expired), are
still accepted, without an expiry, so that jobs submitted before an upgrade keep
their callbacks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

NO_FLOW_RUN = "-"
"""The flow-run segment of a callback URL made outside any flow run."""


@dataclass(frozen=True)
class TokenClaim:
    """What a valid capability token binds.

    Attributes:
        nonce: The job's nonce.
        expires_at: The epoch second after which the token is refused (None: never).
    """

    nonce: str
    expires_at: int | None


def new_nonce() -> str:
    """A fresh random nonce for one job's capability token (128 bits)."""
    return secrets.token_urlsafe(16)


def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def capability_token(
    secret: str, provider: str, flow_run: str, nonce: str, expires_at: int | None = None
) -> str:
    """The token ``{nonce}.{expiry}.{mac}`` that the receiver accepts for one job.

    Args:
        secret: The block's webhook secret.
        provider: The provider's short name.
        flow_run: The flow-run segment of the URL.
        nonce: The job's nonce (:func:`new_nonce`).
        expires_at: The epoch second after which it is refused (None: never).
    """
    expiry = str(expires_at or 0)
    return f"{nonce}.{expiry}.{_mac(secret, f'{provider}/{flow_run}/{nonce}/{expiry}')}"


def token_claim(secret: str, provider: str, flow_run: str, token: str) -> TokenClaim | None:
    """What ``token`` binds if it is valid for ``provider`` and ``flow_run``, else None.

    The MAC is compared in constant time; the expiry is the caller's to check.
    """
    parts = token.split(".")
    if len(parts) == 2:  # first version: no expiry
        nonce, mac = parts
        expected, expires_at = _mac(secret, f"{provider}/{flow_run}/{nonce}"), None
    elif len(parts) == 3 and parts[1].isdigit():
        nonce, expiry, mac = parts
        expected = _mac(secret, f"{provider}/{flow_run}/{nonce}/{expiry}")
        expires_at = int(expiry) or None
    else:
        return None
    if not nonce or not hmac.compare_digest(expected.encode(), mac.encode()):
        return None
    return TokenClaim(nonce, expires_at)


def flow_run_segment(flow_run_id: str | None) -> str:
    """The flow-run segment of a callback URL."""
    return flow_run_id or NO_FLOW_RUN


def valid_flow_run_segment(segment: str) -> bool:
    """Whether ``segment`` is a flow run id (a UUID) or :data:`NO_FLOW_RUN`."""
    if segment == NO_FLOW_RUN:
        return True
    try:
        uuid.UUID(segment)
    except ValueError:
        return False
    return True


def callback_url(
    base_url: str, provider: str, flow_run_id: str | None, token: str | None = None
) -> str:
    """The URL a job's callback is sent to (with its token for ``capability-url``)."""
    url = f"{base_url.rstrip('/')}/hooks/{provider}/{flow_run_segment(flow_run_id)}"
    return f"{url}/{token}" if token else url
