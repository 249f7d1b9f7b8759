"""What the client needs of a credentials block, and the result every provider returns.

The client (:mod:`prefect_pollers.client`) works from these protocols, not from the
block classes, so the blocks may hand out clients (``get_client``) without the two
importing each other. :class:`~prefect_pollers.providers.base.JobApiCredentials`
satisfies :class:`JobApiBlock`; a block whose waits callbacks can end
(:class:`~prefect_pollers.providers.callbacks.CallbackCredentials`) also
:class:`CallbackSettings`.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, SecretStr

from prefect_pollers.engine import JobRef, PollPolicy
from prefect_pollers.limits.shared import SharedLimits
from prefect_pollers.providers.contract import CallbackSpec, JobApiContract


class JobResult(BaseModel):
    """The base of every provider's result model.

    Attributes:
        job_id: The remote job id.
    """

    job_id: str


ResultT = TypeVar("ResultT", bound=JobResult)
ResultT_co = TypeVar("ResultT_co", bound=JobResult, covariant=True)


class JobApiBlock(Protocol[ResultT_co]):
    """A block's configuration and declarations, as the client reads them.

    The fields and methods are those of
    :class:`~prefect_pollers.providers.base.JobApiCredentials`, which documents them.
    """

    api_key: SecretStr
    base_url: str
    timeout_s: float
    max_connections: int
    keepalive_expiry_s: float
    idempotency_header: str | None
    shared_limits: SharedLimits | None
    policy_scale: float

    @property
    def provider(self) -> str:
        """The provider's short name."""
        ...

    def contract(self) -> JobApiContract:
        """The provider's wire contract, with the block's overrides applied."""
        ...

    def build_result(self, ref: JobRef, body: dict[str, Any]) -> ResultT_co:
        """The typed result of a succeeded job."""
        ...

    def effective_policy(self, ref: JobRef, policy: PollPolicy | None = None) -> PollPolicy:
        """``policy`` (or the preset for ``ref``), scaled."""
        ...

    def parse_request(self, request: BaseModel | dict[str, Any], *, where: str = "") -> BaseModel:
        """A request validated against the provider's request model."""
        ...

    def callback_spec(self) -> CallbackSpec | None:
        """How the API calls back, when callbacks are on (None: off)."""
        ...

    def wants_callback(self, request: BaseModel) -> bool:
        """Whether ``request`` is submitted with a callback URL."""
        ...

    def pool_key(self) -> tuple[str, str]:
        """What identifies the block's pooled client."""
        ...


@runtime_checkable
class CallbackSettings(Protocol):
    """What the client reads of a block whose waits callbacks can end."""

    callback_base_url: str | None
    webhook_secret: SecretStr | None

    def callback_token_expiry(self, request: BaseModel, now: float | None = None) -> int | None:
        """When the capability token of a job submitted now expires (epoch seconds)."""
        ...
