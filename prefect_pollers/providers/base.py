"""What every provider's credentials block shares: configuration, and a client to do the work.

A block is configuration only (the API key, base URL, pool size, policy scale, and
the provider's few overridable choices) plus its declarations: the request and
result models, the wire contract (:class:`JobApiContract`), how a result is built
and the default poll policy. :meth:`JobApiCredentials.get_client` returns the
:class:`~prefect_pollers.client.JobApiClient` that sends requests.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import httpx
from prefect.blocks.abstract import CredentialsBlock
from pydantic import BaseModel, Field, SecretStr, ValidationError

from prefect_pollers.engine import InvalidRequestError, JobRef, PollPolicy
from prefect_pollers.limits.shared import SharedLimits
from prefect_pollers.providers.contract import CallbackSpec, JobApiContract
from prefect_pollers.providers.protocol import ResultT

if TYPE_CHECKING:
    from prefect_pollers.client import JobApiClient


CredentialsT = TypeVar("CredentialsT", bound="JobApiCredentials[Any]")
JobEvents = Literal["changes", "ends"]
"""How much of a job's life its Prefect events show: every change of state, or its end."""


class JobApiCredentials(CredentialsBlock, ABC, Generic[ResultT]):
    """Base of every provider's credentials block, generic over its result type.

    A Prefect ``CredentialsBlock``: :meth:`get_client` returns the client that does
    the work. Subclasses declare the provider; users set ``api_key`` and, to point
    at a simulator or a proxy, ``base_url``. ``ABC`` stays a direct base so that
    Prefect registers the providers' blocks, never this interface.

    Attributes:
        api_key: The provider API key. Never logged nor shown in a repr.
        base_url: The API root; the documented one by default.
        timeout_s: Seconds before one HTTP request times out.
        max_connections: Connections of the pooled client, so requests in flight;
            more wait their turn (httpx's pool costs grow with its size).
        keepalive_expiry_s: Seconds an idle connection is kept for reuse. Below
            the 5 s idle timeout of common servers (uvicorn, Node), so the client
            drops a connection before the server does; a request that meets a
            connection the server closed all the same is re-sent once, at once,
            where that is safe.
        policy_scale: Multiplies every poll policy's durations (1 for a real API, the
            simulator's time scale for a simulator).
        shared_limits: Limits that hold across processes and machines (jobs in
            flight, requests per span), in Prefect's global concurrency limits
            (:mod:`~prefect_pollers.limits.shared`).
        idempotency_header: Header carrying the caller's idempotency key on
            submit (none of the seed providers documents one: it is sent for APIs
            that honour it; set to None to not send it).
        job_events: ``changes`` (each job's submit and every change of its state,
            the end included) or ``ends`` (its submit and its end, the state before
            the end in the payload: fewer events for very large batches).
    """

    provider_name: ClassVar[str]
    request_model: ClassVar[type[BaseModel]]

    api_key: SecretStr = Field(description="The provider API key.")
    base_url: str = Field(description="The API root URL.")
    timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one HTTP request.")
    max_connections: int = Field(
        default=50,
        ge=1,
        description="Connections (and so requests in flight) of the pooled client.",
    )
    keepalive_expiry_s: float = Field(
        default=2.0,
        ge=0,
        description="Seconds an idle connection is kept for reuse; below the server's idle "
        "timeout (5 s for uvicorn and Node), so that the client closes it first.",
    )
    idempotency_header: str | None = Field(
        default="Idempotency-Key",
        description="Header that carries the idempotency key on submit; empty to not send it.",
    )
    shared_limits: SharedLimits | None = Field(
        default=None,
        description="Jobs in flight and requests per second shared by every process on this "
        "account, held in Prefect global concurrency limits.",
    )
    job_events: JobEvents = Field(
        default="changes",
        description="The job events emitted: 'changes' (its submit and every change of "
        "state) or 'ends' (its submit and its end: fewer events for very large batches).",
    )
    policy_scale: float = Field(
        default=1.0,
        gt=0,
        description="Multiplies every poll policy's durations: 1 for a real API; the time "
        "scale of a simulator that runs faster than real time.",
    )

    # -- declarations each provider makes -------------------------------------------
    @property
    def provider(self) -> str:
        """The provider's short name, in logs, errors, task run names and events."""
        return self.provider_name

    @abstractmethod
    def contract(self) -> JobApiContract:
        """The provider's wire contract, with this block's overrides applied."""

    @abstractmethod
    def build_result(self, ref: JobRef, body: dict[str, Any]) -> ResultT:
        """The typed result of a succeeded job.

        Args:
            ref: The job.
            body: The result response, or the final status response where the
                contract declares no result endpoint.

        Raises:
            ValueError: when ``body`` is not what the provider documents (a
                ``pydantic.ValidationError`` is one).
        """

    def default_policy(self, ref: JobRef) -> PollPolicy:
        """The poll policy a wait uses when the caller gives none (the provider's preset)."""
        return PollPolicy()

    def callback_spec(self) -> CallbackSpec | None:
        """How this API calls back when callbacks are on for this block (None: they are off)."""
        return None

    def wants_callback(self, request: BaseModel) -> bool:
        """Whether ``request`` is submitted with a callback URL of this block's receiver."""
        return False

    # -- shared behaviour ---------------------------------------------------------------
    def effective_policy(self, ref: JobRef, policy: PollPolicy | None = None) -> PollPolicy:
        """``policy`` (or the preset for ``ref``), scaled by ``policy_scale``."""
        chosen = policy or self.default_policy(ref)
        return chosen if self.policy_scale == 1 else chosen.scaled(self.policy_scale)

    def parse_request(self, request: BaseModel | dict[str, Any], *, where: str = "") -> BaseModel:
        """Validate a request (model or dict) against this provider's request model.

        A model of the right type is returned as it is: validate once, pass the model.

        Args:
            request: The request.
            where: Names the request in the error (e.g. a batch item and CSV line).

        Raises:
            InvalidRequestError: naming the invalid fields, before anything is sent.
        """
        if isinstance(request, self.request_model):
            return request
        try:
            data = request.model_dump() if isinstance(request, BaseModel) else request
            return self.request_model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
                for e in exc.errors()
            )
            raise InvalidRequestError(
                f"invalid {self.provider} request{f' {where}' if where else ''}: {problems}",
                provider=self.provider,
            ) from None

    def pool_key(self) -> tuple[str, str]:
        """What identifies this block's pooled client: its type and a digest of every field.

        Two blocks share a pool, a rate gate and in-flight slots only when
        everything that shapes them (base URL, key, timeout, pool size, contract
        overrides) is the same. The key itself is only in the digest.
        """
        digest = hashlib.sha256(
            (self.model_dump_json() + "\0" + self.api_key.get_secret_value()).encode()
        ).hexdigest()[:24]
        return (f"{type(self).__module__}.{type(self).__qualname__}", digest)

    def get_client(
        self, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> JobApiClient[ResultT]:
        """A new client for this block, owned by the caller.

        Use it as ``async with creds.get_client() as client:``; it closes its pool on
        exit. Prefect tasks share one pooled client per block and event loop instead
        (:func:`~prefect_pollers.client.shared_client`).

        Args:
            transport: An httpx transport to send requests through (tests:
                ``httpx.MockTransport``); the network by default.
        """
        from prefect_pollers.client import JobApiClient

        return JobApiClient(self, transport=transport)


async def load_credentials(
    block_type: type[CredentialsT], credentials: CredentialsT | str
) -> CredentialsT:
    """``credentials`` itself, or the saved block of ``block_type`` with that name.

    Raises:
        TypeError: naming what was given, when it is neither.
    """
    if isinstance(credentials, str):
        loaded = await block_type.aload(credentials)
        if not isinstance(loaded, block_type):  # pragma: no cover - Prefect checks the type
            raise TypeError(f"block {credentials!r} is not a {block_type.__name__}")
        return loaded
    if not isinstance(credentials, block_type):
        raise TypeError(
            f"expected a {block_type.__name__} or the name of a saved one, "
            f"got {type(credentials).__name__}"
        )
    return credentials
