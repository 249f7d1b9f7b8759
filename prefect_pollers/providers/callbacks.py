"""What a block needs to end its waits by callbacks: where the receiver is, and its secret.

:class:`CallbackCredentials` is the base of the blocks whose API can call back when a
job ends (APIXO's callback mode, any webhook-capable ``HttpJobApi``). With
``callback_base_url`` set, a submit sends the receiver's URL for the job
(:mod:`prefect_pollers.providers.callback_urls`), and the wait polls only at the policy's
slow ``callback_safety_interval`` until the callback wakes it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from abc import ABC
from typing import Any

import standardwebhooks
from pydantic import BaseModel, Field, SecretStr, model_validator

from prefect_pollers.engine import JobRef
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.contract import CallbackScheme, CallbackSpec
from prefect_pollers.providers.protocol import ResultT

MIN_CAPABILITY_SECRET_CHARS = 32
"""The shortest webhook secret accepted for capability tokens (their MAC key)."""
TOKEN_GRACE_S = 300.0
"""How long after its job's deadline a capability token is still accepted (late posts)."""
_ATTESTATION_CONTEXT = b"prefect-pollers/callback-attestation/v1"


class CallbackCredentials(JobApiCredentials[ResultT], ABC):
    """A credentials block whose waits callbacks can end.

    Attributes:
        callback_base_url: The public URL of the webhook receiver
            (``prefect-pollers webhooks serve``), e.g. ``https://hooks.example.com``;
            None: callbacks off.
        webhook_secret: For ``capability-url``, the key of the per-job tokens (any
            random string of 32+ characters, shared with the receiver); for
            ``standard-webhooks``, the provider's signing secret (``whsec_...``).
        callback_scheme: Overrides the API's documented scheme.
        trust_signed_callbacks: End a wait on a signed callback's own status,
            without the confirming status call (Standard Webhooks only). The status
            reaches a wait in another process only in an event the receiver
            attested with a key derived from ``webhook_secret``
            (:meth:`attestation_key`): whoever can write events cannot end a wait.
    """

    callback_base_url: str | None = Field(
        default=None,
        description="Public URL of the prefect-pollers webhook receiver; empty: callbacks off.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of capability tokens, or the provider's Standard Webhooks secret.",
    )
    callback_scheme: CallbackScheme | None = Field(
        default=None,
        description="capability-url or standard-webhooks; empty: the API's documented one.",
    )
    trust_signed_callbacks: bool = Field(
        default=False,
        description="End a wait on a signed callback's status without a confirming poll.",
    )

    @model_validator(mode="after")
    def _callbacks_configured(self) -> CallbackCredentials[Any]:
        spec = self.callback_spec()
        if spec is None:
            return self
        base_url = self.callback_base_url or ""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"callback_base_url must be an http(s) URL, got {base_url!r}")
        if self.webhook_secret is None:
            raise ValueError("callbacks need a webhook_secret (the receiver holds the same one)")
        secret = self.webhook_secret.get_secret_value()
        if spec.scheme == "capability-url" and len(secret) < MIN_CAPABILITY_SECRET_CHARS:
            raise ValueError(
                f"webhook_secret must be at least {MIN_CAPABILITY_SECRET_CHARS} characters "
                "for capability tokens (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        if spec.scheme == "standard-webhooks":
            try:
                standardwebhooks.Webhook(secret)
            except Exception:
                raise ValueError(
                    "webhook_secret is not a Standard Webhooks secret (whsec_ and base64)"
                ) from None
        if self.trust_signed_callbacks and spec.scheme != "standard-webhooks":
            raise ValueError("trust_signed_callbacks needs the standard-webhooks scheme")
        return self

    def callback_spec(self) -> CallbackSpec | None:
        """The API's callback spec with this block's scheme, when callbacks are on."""
        spec = self.contract().callback
        if spec is None or not self.callback_base_url:
            return None
        if self.callback_scheme is not None and self.callback_scheme != spec.scheme:
            spec = spec.model_copy(update={"scheme": self.callback_scheme})
        return spec

    def wants_callback(self, request: BaseModel) -> bool:
        """Every request, when callbacks are on."""
        return self.callback_spec() is not None

    def callback_token_expiry(self, request: BaseModel, now: float | None = None) -> int | None:
        """When the capability token of a job submitted now expires (epoch seconds).

        The job's deadline under the provider's preset for ``request`` (scaled like
        every policy) plus :data:`TOKEN_GRACE_S`; None when that preset has no deadline.
        """
        ref = JobRef(
            provider=self.provider, job_id="-", context=self.contract().context_of(request)
        )
        deadline = self.effective_policy(ref).deadline
        if deadline is None:
            return None
        return math.ceil((time.time() if now is None else now) + deadline + TOKEN_GRACE_S)

    def attestation_key(self) -> bytes | None:
        """The key a receiver attests trusted callback statuses with (None: not trusted).

        Derived from ``webhook_secret`` (never the secret itself), and only when the
        block trusts signed callbacks.
        """
        spec = self.callback_spec()
        if (
            not self.trust_signed_callbacks
            or spec is None
            or spec.scheme != "standard-webhooks"
            or self.webhook_secret is None
        ):
            return None
        secret = self.webhook_secret.get_secret_value().encode()
        return hmac.new(secret, _ATTESTATION_CONTEXT, hashlib.sha256).digest()
