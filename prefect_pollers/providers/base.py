"""What every provider's credentials block shares: auth, a pooled client, submit, poll, wait.

A provider is mostly declarations: its name, documented base URL and paths, request
and result models, a :class:`StatusMap`, how to read the job id and status out of
its JSON, and a default poll policy. Everything else (HTTP errors, server hints,
the rate-limit gate, the wait loop) lives here and in the engine, once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import httpx
from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr, ValidationError

from prefect_pollers.engine import (
    Clock,
    InvalidRequestError,
    JobRef,
    JobState,
    JobStatus,
    JsonReply,
    MalformedResponseError,
    PollerError,
    PollPolicy,
    RateLimitedError,
    StatusMap,
    TransientRequestError,
    current_clock,
    request_json,
    wait_for_terminal,
)
from prefect_pollers.engine.ratelimit import RateLimitGate
from prefect_pollers.engine.wait import StateChangeHook

C = TypeVar("C", bound="JobApiCredentials")


class _Connection:
    """A pooled client and rate-limit gate for one (provider, base URL, key, event loop).

    ``slots`` admits at most as many requests as the pool has connections: the
    others wait here, in O(1), rather than in httpcore's pool queue, whose
    bookkeeping grows with the queue times the connections (thousands of waits
    queued there stall the event loop).
    """

    def __init__(self, client: httpx.AsyncClient, max_connections: int) -> None:
        self.client = client
        self.gate = RateLimitGate()
        self.slots = asyncio.Semaphore(max_connections)


# (block type, base URL, key digest) -> event loop -> connection. Keyed by value, not by
# block instance, so copies of one block (Prefect may copy task parameters) share one
# pool and one rate-limit budget; keyed by loop because an httpx client is bound to it.
_connections: dict[tuple[str, str, str], weakref.WeakKeyDictionary] = {}


def dig(body: Any, *keys: str) -> Any:
    """``body[k1][k2]...`` or None when any step is missing or not a mapping."""
    for key in keys:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


class JobApiCredentials(Block, ABC):
    """Base of every provider's credentials block.

    Subclasses declare the provider; users set ``api_key`` and, to point at a
    simulator or a proxy, ``base_url``.

    Attributes:
        api_key: The provider API key. Never logged nor shown in a repr.
        base_url: The API root; the documented one by default.
        timeout_s: Seconds before one HTTP request times out.
        max_connections: Connections of the pooled client, so requests in flight;
            more wait their turn (httpx's pool costs grow with its size).
        policy_scale: Multiplies every poll policy's durations (1 for a real API, the
            simulator's time scale for a simulator).
        idempotency_header: Header carrying the caller's idempotency key on
            submit (none of the seed providers documents one: it is sent for APIs
            that honour it; set to None to not send it).
    """

    provider: ClassVar[str]
    status_map: ClassVar[StatusMap]
    request_model: ClassVar[type[BaseModel]]

    api_key: SecretStr = Field(description="The provider API key.")
    base_url: str = Field(description="The API root URL.")
    timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one HTTP request.")
    max_connections: int = Field(
        default=50,
        ge=1,
        description="Connections (and so requests in flight) of the pooled client.",
    )
    idempotency_header: str | None = Field(
        default="Idempotency-Key",
        description="Header that carries the idempotency key on submit; empty to not send it.",
    )
    policy_scale: float = Field(
        default=1.0,
        gt=0,
        description="Multiplies every poll policy's durations: 1 for a real API; the time "
        "scale of a simulator that runs faster than real time.",
    )

    # -- declarations each provider makes -------------------------------------------
    @abstractmethod
    def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate a request."""

    @abstractmethod
    def submit_request(self, request: BaseModel) -> tuple[str, str, dict[str, Any]]:
        """The (method, path, JSON body) that submits ``request``."""

    @abstractmethod
    def read_submitted(self, request: BaseModel, reply: JsonReply) -> JobRef:
        """The job ref in a submit response (with its status if already terminal)."""

    @abstractmethod
    def status_path(self, ref: JobRef) -> str:
        """The path of the job's status endpoint."""

    @abstractmethod
    def read_status(self, job_id: str, reply: JsonReply) -> JobStatus:
        """The normalized status in a status response."""

    @abstractmethod
    async def fetch_result(self, ref: JobRef, status: JobStatus) -> BaseModel:
        """The typed result of a succeeded job."""

    def get_status_map(self) -> StatusMap:
        """The status map in force (a provider may let fields extend it)."""
        return self.status_map

    def default_policy(self, ref: JobRef) -> PollPolicy:
        """The poll policy a wait uses when the caller gives none (the provider's preset)."""
        return PollPolicy()

    def effective_policy(self, ref: JobRef, policy: PollPolicy | None = None) -> PollPolicy:
        """``policy`` (or the preset for ``ref``), scaled by ``policy_scale``."""
        chosen = policy or self.default_policy(ref)
        return chosen if self.policy_scale == 1 else chosen.scaled(self.policy_scale)

    async def cancel(self, ref: JobRef) -> bool:
        """Ask the provider to cancel the job.

        Returns:
            True if a cancel request was accepted; False where the provider has no
            documented cancel endpoint (the job then keeps running).
        """
        return False

    # -- shared machinery -------------------------------------------------------------
    def _connection(self) -> _Connection:
        digest = hashlib.sha256(self.api_key.get_secret_value().encode()).hexdigest()[:16]
        key = (type(self).__name__, self.base_url.rstrip("/"), digest)
        per_loop = _connections.setdefault(key, weakref.WeakKeyDictionary())
        loop = asyncio.get_running_loop()
        connection = per_loop.get(loop)
        if connection is None or connection.client.is_closed:
            connection = _Connection(
                httpx.AsyncClient(
                    base_url=self.base_url.rstrip("/") + "/",
                    headers={"Accept": "application/json", **self.auth_headers()},
                    timeout=self.timeout_s,
                    limits=httpx.Limits(
                        max_connections=self.max_connections,
                        max_keepalive_connections=self.max_connections,
                    ),
                ),
                self.max_connections,
            )
            per_loop[loop] = connection
        return connection

    def get_client(self) -> httpx.AsyncClient:
        """The pooled ``httpx.AsyncClient`` of this block (one per event loop)."""
        return self._connection().client

    async def aclose(self) -> None:
        """Close this block's pooled client on the running event loop."""
        connection = self._connection()
        await connection.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        job_id: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        polling: bool = False,
        clock: Clock | None = None,
    ) -> JsonReply:
        """One JSON request through the pooled client and the shared rate-limit gate.

        Raises:
            PollerError: a typed error for every failure (see ``request_json``).
        """
        clock = clock or current_clock()
        connection = self._connection()
        async with connection.slots:
            await connection.gate.acquire(clock)
            reply: JsonReply | None = None
            try:
                reply = await request_json(
                    connection.client,
                    method,
                    path.lstrip("/"),
                    provider=self.provider,
                    job_id=job_id,
                    json=json,
                    headers=headers,
                    polling=polling,
                    now=clock.time(),
                )
                return reply
            except Exception as exc:
                connection.gate.release(getattr(exc, "hints", None))
                if isinstance(exc, PollerError):
                    self._redact_key(exc)
                raise
            finally:
                if reply is not None:
                    connection.gate.release(reply.hints)

    def _redact_key(self, exc: PollerError) -> None:
        """Mask the API key in an error built from a provider message that quotes it."""
        key = self.api_key.get_secret_value()
        if key and key in exc.message:
            exc.message = exc.message.replace(key, "**********")
            exc.args = (exc._render(),)

    def parse_request(self, request: BaseModel | dict[str, Any]) -> BaseModel:
        """Validate a request (model or dict) against this provider's request model.

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
                f"invalid {self.provider} request: {problems}", provider=self.provider
            ) from None

    async def submit(
        self, request: BaseModel | dict[str, Any], *, idempotency_key: str | None = None
    ) -> JobRef:
        """Submit one job and return its ref (no retry: a retry could submit twice).

        Args:
            request: The provider's request model, or a dict of its fields.
            idempotency_key: Sent in ``idempotency_header`` and kept on the ref.
        """
        parsed = self.parse_request(request)
        method, path, body = self.submit_request(parsed)
        headers = (
            {self.idempotency_header: idempotency_key}
            if idempotency_key and self.idempotency_header
            else None
        )
        clock = current_clock()
        try:
            reply = await self.request(method, path, json=body, headers=headers, clock=clock)
            ref = self.read_submitted(parsed, reply)
        except PollerError as exc:
            _say_if_maybe_created(exc, idempotency_key)
            raise
        submitted_at = datetime.fromtimestamp(clock.time(), UTC)
        return ref.model_copy(
            update={"idempotency_key": idempotency_key, "submitted_at": submitted_at}
        )

    async def poll(self, ref: JobRef) -> JobStatus:
        """One status request, normalized."""
        reply = await self.request("GET", self.status_path(ref), job_id=ref.job_id, polling=True)
        return self.read_status(ref.job_id, reply)

    async def wait(
        self,
        ref: JobRef,
        policy: PollPolicy | None = None,
        *,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        on_change: StateChangeHook | None = None,
    ) -> JobStatus:
        """Poll ``ref`` until it is terminal; see :func:`wait_for_terminal`.

        Args:
            ref: The job.
            policy: The schedule; the provider's preset for ``ref`` if None. Either is
                scaled by ``policy_scale``.
            logger: Where state changes and polls are logged.
            on_change: Called on every change of state or phase.
        """
        return await wait_for_terminal(
            lambda: self.poll(ref),
            self.effective_policy(ref, policy),
            provider=self.provider,
            job_id=ref.job_id,
            started_at=ref.submitted_at.timestamp(),
            first_status=ref.submitted_status,
            logger=logger,
            on_change=on_change,
        )

    # -- helpers for the declarations -------------------------------------------------
    def job_ref(self, reply: JsonReply, job_id: Any, where: str, **fields: Any) -> JobRef:
        """A :class:`JobRef` for the id a submit response holds at ``where``.

        Raises:
            MalformedResponseError: when there is no usable id there.
        """
        if not isinstance(job_id, (str, int)) or isinstance(job_id, bool) or job_id == "":
            raise MalformedResponseError(
                f"{self.provider} submit response has no job id at {where!r}",
                provider=self.provider, path=reply.path, http_status=reply.status_code,
            )
        return JobRef(provider=self.provider, job_id=str(job_id), **fields)

    def status_with_error_object(self, job_id: str, reply: JsonReply) -> JobStatus:
        """The status of a body shaped ``{"status", "error": {"code", "message"}}``."""
        body = reply.body
        return self.make_status(
            job_id,
            reply,
            body.get("status"),
            error_code=dig(body, "error", "code"),
            error_message=dig(body, "error", "message"),
        )

    def make_status(
        self,
        job_id: str,
        reply: JsonReply,
        raw_status: Any,
        *,
        phase: str | None = None,
        error_code: Any = None,
        error_message: Any = None,
        require_status: bool = True,
    ) -> JobStatus:
        """Build a :class:`JobStatus` from the raw values a provider's body holds.

        Raises:
            MalformedResponseError: when the status is missing or not a string.
        """
        if not isinstance(raw_status, str) or (require_status and not raw_status):
            raise MalformedResponseError(
                f"{self.provider} status response has no string status "
                f"(got {type(raw_status).__name__})",
                provider=self.provider,
                job_id=job_id,
                path=reply.path,
                http_status=reply.status_code,
            )
        state, recognized = self.get_status_map().classify(raw_status)
        failed = state in (JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED)
        return JobStatus(
            job_id=job_id,
            state=state,
            raw_status=raw_status,
            phase=phase if phase is not None else raw_status,
            error_code=str(error_code) if failed and error_code is not None else None,
            error_message=str(error_message) if failed and error_message is not None else None,
            payload=reply.body,
            hints=reply.hints,
            recognized=recognized,
        )


def _say_if_maybe_created(exc: PollerError, idempotency_key: str | None) -> None:
    """Tell, in a failed submit's message, that the job may exist all the same.

    After a timeout, a dropped connection, a 5xx other than 502/503 or an unreadable
    2xx body, the provider may have created the job: nothing is retried (a retry
    could run it twice) and the caller must know to look before submitting again.
    Errors after which the job surely was not created (connection refused, 429,
    502, 503, refusals) are left as they are.
    """
    if isinstance(exc, RateLimitedError) or not isinstance(
        exc, (TransientRequestError, MalformedResponseError)
    ):
        return
    if isinstance(exc, TransientRequestError) and (
        not exc.request_sent or exc.http_status in (502, 503)
    ):
        return
    key = f" (idempotency key {idempotency_key!r})" if idempotency_key else ""
    exc.hint = (
        f"The job may have been created all the same{key}: look for it at the provider "
        "before submitting again, or it may run twice"
    )
    exc.args = (exc._render(),)


async def load_credentials(block_type: type[C], credentials: C | str) -> C:
    """``credentials`` itself, or the saved block of ``block_type`` with that name."""
    if isinstance(credentials, str):
        return await block_type.aload(credentials)
    if not isinstance(credentials, block_type):
        raise TypeError(
            f"expected a {block_type.__name__} or the name of a saved one, "
            f"got {type(credentials).__name__}"
        )
    return credentials
