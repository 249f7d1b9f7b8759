"""Callback URLs and the capability tokens in them.

A callback URL is ``{callback_base_url}/hooks/{provider}/{flow run id or -}``, and
for the ``capability-url`` scheme (APIs that sign nothing, such as APIXO) one more
segment: a token ``{nonce}.{mac}``, where the MAC is an HMAC-SHA256 of the provider,
the flow run and the nonce under the block's webhook secret. Only someone who holds
the secret can make a token the receiver accepts, the receiver needs no list of
tokens to check one (it may run in another process or on another machine), and a
token binds one job: the wait accepts a callback only with its own nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

NO_FLOW_RUN = "-"
"""The flow-run segment of a callback URL made outside any flow run."""


def new_nonce() -> str:
    """A fresh random nonce for one job's capability token (128 bits)."""
    return secrets.token_urlsafe(16)


def capability_token(secret: str, provider: str, flow_run: str, nonce: str) -> str:
    """The token ``{nonce}.{mac}`` that the receiver accepts for one job."""
    message = f"{provider}/{flow_run}/{nonce}".encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"{nonce}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def token_nonce(secret: str, provider: str, flow_run: str, token: str) -> str | None:
    """The nonce of ``token`` if it is valid for ``provider`` and ``flow_run``, else None.

    The MAC is compared in constant time.
    """
    nonce, dot, _ = token.partition(".")
    if not dot or not nonce:
        return None
    expected = capability_token(secret, provider, flow_run, nonce)
    return nonce if hmac.compare_digest(expected.encode(), token.encode()) else None


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
