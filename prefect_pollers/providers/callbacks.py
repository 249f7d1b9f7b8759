"""What a block needs to end its waits by callbacks: where the receiver is, and its secret.

:class:`CallbackCredentials` is the base of the blocks whose API can call back when a
job ends (APIXO's callback mode, any webhook-capable ``HttpJobApi``). With
``callback_base_url`` set, a submit sends the receiver's URL for the job
(:mod:`prefect_pollers.providers.callback_urls`), and the wait polls only at the policy's
slow ``callback_safety_interval`` until the callback wakes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from abc import ABC
from typing import Annotated, Any, ClassVar, TypeVar

import standardwebhooks
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from prefect_pollers.engine import ContractMismatchError, JobRef, PollerError
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.contract import CallbackSpec, compiled, search
from prefect_pollers.providers.protocol import ResultT
from prefect_pollers.providers.signatures import (
    CapabilityUrl,
    Ed25519Jwks,
    HmacSignature,
    SignatureScheme,
    StandardWebhooks,
    as_scheme,
)

MIN_CAPABILITY_SECRET_CHARS = 32
"""The shortest webhook secret accepted for capability tokens (their MAC key)."""
TOKEN_GRACE_S = 300.0
"""How long after its job's deadline a capability token is still accepted (late posts)."""
_ATTESTATION_CONTEXT = b"prefect-pollers/callback-attestation/v1"
_C = TypeVar("_C", bound="CallbackCredentials[Any]")
# (pool key, secret URL) -> the secret the API answered: fetched once per process.
_FETCHED_SECRETS: dict[tuple[tuple[str, str], str], SecretStr] = {}


class CallbackCredentials(JobApiCredentials[ResultT], ABC):
    """A credentials block whose waits callbacks can end.

    Attributes:
        callback_base_url: The public URL of the webhook receiver
            (``prefect-pollers webhooks serve``), e.g. ``https://hooks.example.com``;
            None: callbacks off.
        webhook_secret: For ``capability-url``, the key of the per-job tokens (any
            random string of 32+ characters, shared with the receiver); for
            ``standard-webhooks``, the provider's signing secret (``whsec_...``);
            for ``hmac``, the shared secret; ``ed25519-jwks`` needs none (public
            keys), except as the attestation key of ``trust_signed_callbacks``.
        webhook_secret_url: Where the API answers its webhook signing secret, a
            path relative to ``base_url`` (Replicate's ``webhooks/default/secret``):
            with it, ``webhook_secret`` may stay empty and
            :meth:`with_webhook_secret` fetches it (the receiver does at start).
        webhook_secret_field: JMESPath to the secret in that response.
        callback_scheme: Overrides the API's documented scheme: a
            :data:`~prefect_pollers.providers.signatures.SignatureScheme` (e.g.
            ``GITHUB``, ``STRIPE``, ``FAL``, or an ``Ed25519Jwks`` whose
            ``jwks_url`` points at a test server), or a name
            (``standard-webhooks``, ``capability-url``).
        trust_signed_callbacks: End a wait on a signed callback's own status,
            without the confirming status call (signed schemes only). The status
            reaches a wait in another process only in an event the receiver
            attested with a key derived from ``webhook_secret``
            (:meth:`attestation_key`): whoever can write events cannot end a wait.
    """

    fetches_signing_secret: ClassVar[bool] = False
    """True on a block whose :meth:`signing_secret` fetches the secret from the provider
    by code of its own (a ``webhook_secret_url`` declares it as data): ``webhook_secret``
    may then stay empty under a signed scheme."""

    callback_base_url: str | None = Field(
        default=None,
        description="Public URL of the prefect-pollers webhook receiver; empty: callbacks off.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of capability tokens, or the provider's Standard Webhooks secret.",
    )
    webhook_secret_url: str | None = Field(
        default=None,
        description="Path (relative to base_url) answering the webhook signing secret, "
        "fetched when webhook_secret is empty.",
    )
    webhook_secret_field: str = Field(
        default="key", description="JMESPath to the secret in the webhook_secret_url response."
    )
    callback_scheme: Annotated[SignatureScheme | None, BeforeValidator(as_scheme)] = Field(
        default=None,
        description="How callbacks are signed (standard-webhooks, capability-url, hmac, "
        "ed25519-jwks); empty: the API's documented scheme.",
    )
    trust_signed_callbacks: bool = Field(
        default=False,
        description="End a wait on a signed callback's status without a confirming poll.",
    )

    @field_validator("webhook_secret_url")
    @classmethod
    def _relative_secret_url(cls, value: str | None) -> str | None:
        if value is not None and ("://" in value or value.startswith("//")):
            raise ValueError(
                "webhook_secret_url must be a path relative to base_url (the API key is "
                f"sent only there), got {value!r}"
            )
        return value

    @field_validator("webhook_secret_field")
    @classmethod
    def _valid_secret_path(cls, value: str) -> str:
        compiled(value)
        return value

    @model_validator(mode="after")
    def _callbacks_configured(self) -> CallbackCredentials[Any]:
        spec = self.callback_spec()
        if spec is None:
            return self
        base_url = self.callback_base_url or ""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"callback_base_url must be an http(s) URL, got {base_url!r}")
        scheme = spec.scheme
        if isinstance(scheme, CapabilityUrl) and spec.url_in == "none":
            raise ValueError(
                "capability-url callbacks need a per-job URL: with callback_url_in='none' "
                "use a signed scheme (standard-webhooks, hmac, ed25519-jwks)"
            )
        served = self.fetches_signing_secret or self.webhook_secret_url is not None
        if self.webhook_secret is None:
            if isinstance(scheme, CapabilityUrl) or (
                not isinstance(scheme, Ed25519Jwks) and not served
            ):
                raise ValueError(
                    "callbacks need a webhook_secret (the receiver holds the same one)"
                )
            if self.trust_signed_callbacks:
                raise ValueError(
                    "trust_signed_callbacks needs a webhook_secret (its attestation key)"
                )
            return self
        self._check_secret(spec, self.webhook_secret.get_secret_value())
        return self

    def _check_secret(self, spec: CallbackSpec, secret: str) -> None:
        """Raise ValueError when ``secret`` cannot serve ``spec``'s scheme."""
        scheme = spec.scheme
        if isinstance(scheme, CapabilityUrl):
            if len(secret) < MIN_CAPABILITY_SECRET_CHARS:
                raise ValueError(
                    f"webhook_secret must be at least {MIN_CAPABILITY_SECRET_CHARS} "
                    "characters for capability tokens (e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')"
                )
            if self.trust_signed_callbacks:
                raise ValueError("trust_signed_callbacks needs a signed scheme, not capability-url")
        elif isinstance(scheme, StandardWebhooks):
            try:
                standardwebhooks.Webhook(secret)
            except Exception:
                raise ValueError(
                    "webhook_secret is not a Standard Webhooks secret (whsec_ and base64)"
                ) from None
        elif isinstance(scheme, HmacSignature) and scheme.secret_encoding == "base64":
            try:
                base64.b64decode(secret.rpartition("_")[2], validate=True)
            except binascii.Error:
                raise ValueError("webhook_secret is not base64 (after its prefix)") from None

    def callback_spec(self) -> CallbackSpec | None:
        """The API's callback spec with this block's scheme, when callbacks are on."""
        spec = self.contract().callback
        if spec is None or not self.callback_base_url:
            return None
        if self.callback_scheme is not None and self.callback_scheme != spec.scheme:
            spec = spec.model_copy(update={"scheme": self.callback_scheme})
        return spec

    async def signing_secret(self) -> SecretStr | None:
        """The secret callbacks are signed with: ``webhook_secret``, else the API's.

        With no ``webhook_secret``, the one ``webhook_secret_url`` answers (fetched
        once per process; None while it cannot be fetched). A block whose provider
        serves it otherwise (and sets :attr:`fetches_signing_secret`) overrides
        this. The receiver awaits it for each signed callback, and answers 503 (the
        provider retries) while it is None.
        """
        if self.webhook_secret is not None or self.webhook_secret_url is None:
            return self.webhook_secret
        try:
            return (await self.with_webhook_secret()).webhook_secret
        except (PollerError, ValueError):
            return None

    async def with_webhook_secret(self: _C) -> _C:
        """This block with its webhook secret, fetched from ``webhook_secret_url`` if empty.

        Fetched once per process (cached in memory, never logged nor stored); a
        block with a ``webhook_secret`` or no ``webhook_secret_url`` comes back as it is.

        Raises:
            ContractMismatchError: the response has no string at ``webhook_secret_field``.
            ValueError: the secret does not fit the callback scheme.
            PollerError: the request failed (its typed error).
        """
        url = self.webhook_secret_url
        if self.webhook_secret is not None or url is None:
            return self
        key = (self.pool_key(), url)
        secret = _FETCHED_SECRETS.get(key)
        if secret is None:
            async with self.get_client() as client:
                reply = await client.request("GET", url)
            value = search(self.webhook_secret_field, reply.body)
            if not isinstance(value, str) or not value:
                raise ContractMismatchError(
                    f"{self.provider} answered no webhook secret at "
                    f"{self.webhook_secret_field!r} (got {type(value).__name__})",
                    provider=self.provider,
                    path=reply.path,
                    http_status=reply.status_code,
                )
            secret = _FETCHED_SECRETS[key] = SecretStr(value)
        spec = self.callback_spec()
        if spec is not None:
            self._check_secret(spec, secret.get_secret_value())
        return self.model_copy(update={"webhook_secret": secret})

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
            or isinstance(spec.scheme, CapabilityUrl)
            or self.webhook_secret is None
        ):
            return None
        secret = self.webhook_secret.get_secret_value().encode()
        return hmac.new(secret, _ATTESTATION_CONTEXT, hashlib.sha256).digest()
