"""The client that does a credentials block's work: submit, poll, wait, fetch, cancel.

A :class:`JobApiClient` owns one pooled ``httpx.AsyncClient``, the in-flight slots
that bound its requests, and the rate-limit gate every request passes through. It
interprets the block's :class:`~prefect_pollers.providers.contract.JobApiContract`,
so no provider writes HTTP code. It has an explicit lifecycle (``async with``, or
:meth:`JobApiClient.aclose`). Prefect tasks share one client per block and event
loop (:func:`shared_client`), so all waits of a flow run on one block share one pool
and one rate-limit budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from prefect_pollers.engine import (
    BadRequestError,
    CallbackBinding,
    ContractMismatchError,
    JobRef,
    JobState,
    JobStatus,
    JsonReply,
    MalformedResponseError,
    PollerError,
    PollPolicy,
    RateLimitedError,
    ResultUnavailableError,
    TransientRequestError,
    Wakeup,
    current_clock,
    raise_for_outcome,
    request_json,
    wait_for_terminal,
)
from prefect_pollers.engine.http import send_request
from prefect_pollers.engine.ratelimit import RateLimitGate
from prefect_pollers.engine.wait import StateChangeHook, StatusHook
from prefect_pollers.limits.shared import SharedLimiter
from prefect_pollers.providers.callback_urls import (
    NO_FLOW_RUN,
    callback_url,
    capability_token,
    flow_run_segment,
    new_nonce,
)
from prefect_pollers.providers.contract import Endpoint, job_id_at, search
from prefect_pollers.providers.protocol import CallbackSettings, JobApiBlock, ResultT
from prefect_pollers.providers.signatures import CapabilityUrl

SUBMIT_ATTEMPTS = 4
"""Submit attempts in all when a failure surely created no job (and result fetches)."""
CONNECTIONS_PER_POOL = 4
"""Connections of each of a client's small pools (see :class:`JobApiClient`)."""
SUBMIT_BACKOFF_S = 1.0
"""The pause after a submit's first failure, doubling after each (times ``policy_scale``)."""

_log = logging.getLogger("prefect_pollers.client")
T = TypeVar("T")
if TYPE_CHECKING:
    Logger = logging.Logger | logging.LoggerAdapter[Any]


class JobApiClient(Generic[ResultT]):
    """Sends a credentials block's requests through one pool, slots and rate gate.

    Args:
        credentials: The block whose configuration and contract it follows.
        transport: An httpx transport to send through (tests); the network by default.
    """

    def __init__(
        self,
        credentials: JobApiBlock[ResultT],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self.provider = credentials.provider
        self.contract = credentials.contract()
        self.gate = RateLimitGate()
        limits = credentials.shared_limits
        self.shared = SharedLimiter(limits, self.provider) if limits else None
        # At most as many requests as the pool has connections: the others wait here,
        # in O(1), rather than in httpcore's pool queue, whose bookkeeping grows with
        # the queue times the connections (thousands queued there stall the loop).
        self._slots = asyncio.Semaphore(credentials.max_connections)
        self._api_key = credentials.api_key.get_secret_value()
        self._callbacks = credentials if isinstance(credentials, CallbackSettings) else None
        secret = self._callbacks.webhook_secret if self._callbacks else None
        self._webhook_secret = secret.get_secret_value() if secret is not None else ""
        basic = self.contract.basic_auth
        # Masked wherever a provider's message is quoted: every secret the requests carry.
        self._secrets = tuple(
            filter(
                None,
                (
                    self._api_key,
                    self._webhook_secret,
                    basic.password.get_secret_value() if basic else "",
                    basic.header_value().split()[1] if basic else "",
                ),
            )
        )
        # httpcore looks at every connection of a pool for every request it sends, so
        # its cost per request grows with the pool (a third of a busy loop at 50
        # connections): the connections are split into small pools, and a request
        # goes through the one with the fewest requests in flight.
        # A given transport (tests) is one pool.
        per_pool = credentials.max_connections if transport else CONNECTIONS_PER_POOL
        sizes = _pool_sizes(credentials.max_connections, per_pool)
        self._pools = [
            httpx.AsyncClient(
                base_url=credentials.base_url.rstrip("/") + "/",
                headers={"Accept": "application/json", **self.contract.auth_headers(self._api_key)},
                timeout=credentials.timeout_s,
                limits=httpx.Limits(
                    max_connections=size,
                    max_keepalive_connections=size,
                    keepalive_expiry=credentials.keepalive_expiry_s,
                ),
                transport=transport,
                verify=_ssl_context(),
            )
            for size in sizes
        ]
        self._pool_in_flight = [0] * len(sizes)

    def __repr__(self) -> str:
        return f"JobApiClient(provider={self.provider!r}, base_url={self.credentials.base_url!r})"

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._pools[0].is_closed

    async def __aenter__(self) -> JobApiClient[ResultT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools and give back the shared limits' leases."""
        for pool in self._pools:
            await pool.aclose()
        if self.shared is not None:
            await self.shared.aclose()

    @contextlib.asynccontextmanager
    async def job_slot(self) -> AsyncIterator[None]:
        """Hold one of the block's shared jobs-in-flight slots, if it limits them.

        Hold it from before a job's submit until its wait ends.
        """
        if self.shared is None:
            yield
            return
        async with self.shared.job():
            yield

    # -- one request ----------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        job_id: str | None = None,
        json: Any = None,
        files: Any = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        polling: bool = False,
        creates: bool = False,
        idempotency_key: str | None = None,
        until: float | None = None,
    ) -> JsonReply:
        """One JSON request through the in-flight slots and the rate-limit gate.

        Args:
            method: HTTP method.
            path: Path relative to the base URL.
            job_id: The job it concerns, for errors.
            json: The JSON body.
            files: Files of a multipart body (an upload), as httpx takes them.
            data: The other fields of a multipart body.
            headers: Extra headers.
            polling: A status call (a 404 means the job is unknown).
            creates: A submit (errors say whether the job may exist).
            idempotency_key: The submit's key, named in its errors.
            until: Epoch seconds after which the answer is of no use (a wait's
                deadline): the rate gate does not hold the request past it.

        A request that fails on a reused keep-alive connection before any response
        (the server had closed it as idle) is re-sent once, at once, on a fresh
        connection: always for a status, result or cancel request; for a submit only
        when the provider deduplicates on the idempotency key it carries.

        Raises:
            PollerError: a typed error for every failure (see ``request_json``);
                ``RateLimitedError`` without sending when the rate-limit window
                resets only after ``until``.
        """
        clock = current_clock()
        async with self._slots:
            if not await self.gate.acquire(clock, until=until):
                raise RateLimitedError(
                    "the rate-limit window is spent until after the wait's deadline",
                    retry_after=self.gate.seconds_to_reset(clock),
                    request_sent=False,
                    provider=self.provider,
                    job_id=job_id,
                    path=path,
                )
            hints = None
            pool = min(range(len(self._pools)), key=self._pool_in_flight.__getitem__)
            self._pool_in_flight[pool] += 1
            resend_stale = not creates or self.resends_submit(idempotency_key)
            try:
                # The shared slot last, just before sending: never held while this
                # request waits for a local slot or through a rate-gate hold.
                async with self._shared_request_slot():
                    for attempt in (1, 2):
                        try:
                            reply = await request_json(
                                self._pools[pool],
                                method,
                                path.lstrip("/"),
                                provider=self.provider,
                                job_id=job_id,
                                json=json,
                                files=files,
                                data=data,
                                headers=headers,
                                polling=polling,
                                creates=creates,
                                idempotency_key=idempotency_key,
                                not_created_statuses=self.contract.submit_not_created_statuses,
                                secrets=self._secrets,
                                now=clock.time(),
                                ratelimit_reset=self.contract.ratelimit_reset,
                            )
                        except TransientRequestError as exc:
                            if attempt == 1 and exc.stale_connection and resend_stale:
                                _log.debug(
                                    "%s %s met a stale keep-alive connection; re-sending it once",
                                    self.provider,
                                    exc.path,
                                )
                                continue
                            raise
                        hints = reply.hints
                        return reply
                    raise AssertionError("unreachable")  # pragma: no cover
            except PollerError as exc:
                hints = exc.hints  # a refused response still tells the gate its budget
                raise
            finally:
                self._pool_in_flight[pool] -= 1
                self.gate.release(hints)

    @contextlib.asynccontextmanager
    async def _shared_request_slot(self) -> AsyncIterator[None]:
        """Hold a shared request slot, if the block limits requests, until a span after.

        The request reached the server before its response came back, so holding
        the slot ``per_seconds`` past the response keeps every span under the limit.
        """
        slots = self.shared.requests if self.shared else None
        if slots is None:
            yield
            return
        lease = await slots.acquire()
        try:
            yield
        finally:
            slots.release(lease, delay=slots.hold_after)

    @contextlib.asynccontextmanager
    async def stream_lines(
        self, url: str, *, job_id: str | None = None
    ) -> AsyncIterator[AsyncIterator[str]]:
        """The lines of a GET response, read as they arrive (a JSONL results file).

        The request holds an in-flight slot and passes the rate gate like any other
        until the response is closed, when the block exits.

        Args:
            url: A path relative to the base URL, or an absolute URL on the base
                URL's origin (a status may name its results by absolute URL).
            job_id: The job it concerns, for errors.

        Raises:
            PollerError: a typed error for a failed request (as :meth:`request`);
                ``BadRequestError`` for an absolute URL on another origin (the API
                key is never sent elsewhere).
        """
        target = self._on_origin(url, job_id)
        clock = current_clock()
        async with self._slots:
            await self.gate.acquire(clock)
            hints = None
            try:
                async with self._shared_request_slot():
                    response, hints, _ = await send_request(
                        self._pools[0],
                        "GET",
                        target,
                        provider=self.provider,
                        job_id=job_id,
                        polling=True,
                        secrets=self._secrets,
                        now=clock.time(),
                        ratelimit_reset=self.contract.ratelimit_reset,
                        stream=True,
                    )
                    try:
                        yield response.aiter_lines()
                    finally:
                        await response.aclose()
            except PollerError as exc:
                hints = exc.hints
                raise
            finally:
                self.gate.release(hints)

    def _on_origin(self, url: str, job_id: str | None) -> str:
        """``url`` made relative to the base URL's origin check: relative paths pass."""
        parsed = httpx.URL(url)
        if not parsed.is_absolute_url:
            return url.lstrip("/")
        base = self._pools[0].base_url
        if (parsed.scheme, parsed.host, parsed.port) != (base.scheme, base.host, base.port):
            raise BadRequestError(
                f"{self.provider} named a URL on another origin ({parsed.scheme}://"
                f"{parsed.host}); the API key is sent only to {base.scheme}://{base.host}",
                provider=self.provider,
                job_id=job_id,
            )
        return str(parsed)

    # -- submit ---------------------------------------------------------------------------
    async def submit(
        self,
        request: BaseModel | dict[str, Any],
        *,
        idempotency_key: str | None = None,
        flow_run_id: str | None = None,
    ) -> JobRef:
        """Submit one job and return its ref: the one retry layer of submits.

        A retryable failure is retried (``SUBMIT_ATTEMPTS`` in all, 1 s, 2 s, 4 s apart
        times the block's ``policy_scale``, or as long as ``Retry-After`` says) when it
        surely created no job (``not error.may_have_created``), or when re-sending is
        safe all the same: the provider's contract declares a header it deduplicates
        submits on (``dedup_header``) and the submit carries a key in it. Any other
        failure is raised at once, saying whether the job may exist and naming the
        key and the ledger command that shows it.

        Args:
            request: The provider's request model (validated once: a model is used
                as it is) or a dict of its fields.
            idempotency_key: Sent in the block's ``idempotency_header`` (and in the
                contract's ``dedup_header``), kept on the ref and named in errors.
            flow_run_id: The submitting flow run, named in the callback URL (when
                the block's callbacks are on) so its callback events relate to it.
        """
        parsed = self.credentials.parse_request(request)
        callback = self._callback_for(parsed, flow_run_id)
        return await self.retrying(
            lambda: self._submit_once(parsed, idempotency_key, callback),
            resend=self.resends_submit(idempotency_key),
            what="submit",
        )

    async def retrying(self, send: Callable[[], Awaitable[T]], *, resend: bool, what: str) -> T:
        """``send``, retried while safe: the one retry layer of creates and result fetches.

        A retryable failure is retried (``SUBMIT_ATTEMPTS`` in all, 1 s, 2 s, 4 s apart
        times the block's ``policy_scale``, or as long as ``Retry-After`` says) when it
        surely created nothing (``not error.may_have_created``), or when ``resend`` says
        re-sending is safe all the same.

        Args:
            send: Sends the request once.
            resend: Whether a request that may have created something may be re-sent.
            what: Names the request in the log (``submit``, ``upload``, ``result fetch``).

        A result fetch comes after its job ended, where a wait's error budget no
        longer covers it: its few attempts here are all it gets.
        """
        clock = current_clock()
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                return await send()
            except PollerError as exc:
                safe = not exc.may_have_created or resend
                if not exc.retryable or not safe or attempt == SUBMIT_ATTEMPTS:
                    raise
                delay = getattr(exc, "retry_after", None) or (
                    SUBMIT_BACKOFF_S * 2.0 ** (attempt - 1) * self.credentials.policy_scale
                )
                why = (
                    "the provider deduplicates on the idempotency key: re-sending it"
                    if exc.may_have_created
                    else "nothing was created"
                )
                _log.warning(
                    "%s %s failed (%s); %s, retrying in %.3g s (%d of %d)",
                    self.provider,
                    what,
                    exc.message,
                    why,
                    delay,
                    attempt,
                    SUBMIT_ATTEMPTS,
                )
                await clock.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def resends_submit(self, idempotency_key: str | None) -> bool:
        """Whether a submit under ``idempotency_key`` may be re-sent after its answer was lost.

        Only when the contract declares a header the provider deduplicates submits on
        (``dedup_header``) and there is a key to send in it.
        """
        return bool(idempotency_key) and self.contract.dedup_header is not None

    def _callback_for(
        self, request: BaseModel, flow_run_id: str | None
    ) -> tuple[CallbackBinding, str | None] | None:
        """The callback binding and URL of a submit, when the block's callbacks are on.

        For an API that calls one URL per account (``url_in="none"``) the submit
        carries no URL, and its callbacks come to the receiver's URL without a
        flow run (``{callback_base_url}/hooks/{provider}/-``).
        """
        callbacks = self._callbacks
        if callbacks is None or not self.credentials.wants_callback(request):
            return None
        spec = self.credentials.callback_spec()
        base_url = callbacks.callback_base_url
        if spec is None or base_url is None:
            return None
        if spec.url_in == "none":
            return CallbackBinding(flow_run=NO_FLOW_RUN), None
        segment = flow_run_segment(flow_run_id)
        if not isinstance(spec.scheme, CapabilityUrl):  # a signed scheme: no token
            binding = CallbackBinding(flow_run=segment)
            return binding, callback_url(base_url, self.provider, flow_run_id)
        nonce = new_nonce()
        expires_at = callbacks.callback_token_expiry(request)
        token = capability_token(self._webhook_secret, self.provider, segment, nonce, expires_at)
        binding = CallbackBinding(flow_run=segment, nonce=nonce)
        return binding, callback_url(base_url, self.provider, flow_run_id, token)

    async def _submit_once(
        self,
        request: BaseModel,
        idempotency_key: str | None,
        callback: tuple[CallbackBinding, str | None] | None = None,
    ) -> JobRef:
        method, path, body = self.contract.submit_request(
            request, callback_url=callback[1] if callback else None
        )
        headers: dict[str, str] = {}
        if idempotency_key:
            for header in (self.credentials.idempotency_header, self.contract.dedup_header):
                if header:
                    headers[header] = idempotency_key
        reply = await self.request(
            method,
            path,
            json=body,
            creates=True,
            idempotency_key=idempotency_key,
            headers=headers or None,
        )
        job_id = job_id_at(self.contract.job_id_field, reply.body)
        if job_id is None:
            raise MalformedResponseError(
                f"{self.provider} submit response has no job id at {self.contract.job_id_field!r}",
                provider=self.provider,
                path=reply.path,
                http_status=reply.status_code,
                idempotency_key=idempotency_key,
                may_have_created=True,
            )
        status = None
        if isinstance(search(self.contract.status_field, reply.body), str):
            status = self.contract.status_of(self.provider, job_id, reply)
        return JobRef(
            provider=self.provider,
            job_id=job_id,
            submitted_at=datetime.fromtimestamp(current_clock().time(), timezone.utc),
            idempotency_key=idempotency_key,
            context={
                **self.contract.context_of(request),
                **self.contract.response_context_of(reply.body),
            },
            submitted_status=status if status is not None and status.state.terminal else None,
            callback=callback[0] if callback else None,
        )

    # -- poll and wait --------------------------------------------------------------------
    async def poll(self, ref: JobRef, *, until: float | None = None) -> JobStatus:
        """One status request, normalized.

        Args:
            ref: The job.
            until: A deadline the rate gate does not hold the request past.
        """
        path = self._job_url(self.contract.status, ref)
        reply = await self.request(
            self.contract.status.method, path, job_id=ref.job_id, polling=True, until=until
        )
        return self.contract.status_of(self.provider, ref.job_id, reply)

    async def wait(
        self,
        ref: JobRef,
        policy: PollPolicy | None = None,
        *,
        logger: Logger | None = None,
        on_change: StateChangeHook | None = None,
        wakeup: Wakeup | None = None,
        on_status: StatusHook | None = None,
    ) -> JobStatus:
        """Poll ``ref`` until it is terminal; see :func:`wait_for_terminal`.

        Args:
            ref: The job.
            policy: The schedule; the provider's preset for ``ref`` if None. Either is
                scaled by the block's ``policy_scale``.
            logger: Where state changes and polls are logged.
            on_change: Called on every change of state or phase.
            wakeup: Set by the job's callback (:mod:`prefect_pollers.webhooks`):
                polls then keep to the policy's safety cadence.
            on_status: Called with every status seen.
        """
        chosen = self.credentials.effective_policy(ref, policy)
        started_at = ref.submitted_at.timestamp()
        until = None if chosen.deadline is None else started_at + chosen.deadline
        return await wait_for_terminal(
            lambda: self.poll(ref, until=until),
            chosen,
            provider=self.provider,
            job_id=ref.job_id,
            started_at=started_at,
            first_status=ref.submitted_status,
            logger=logger,
            on_change=on_change,
            wakeup=wakeup,
            on_status=on_status,
        )

    def _job_url(
        self, endpoint: Endpoint, ref: JobRef, status: dict[str, Any] | None = None
    ) -> str:
        """``endpoint``'s URL for ``ref``: relative, or absolute on base_url's origin.

        Raises:
            ContractMismatchError: the template names a field the API never sent.
            BadRequestError: an absolute URL on another origin (the key stays home).
        """
        try:
            url = self.contract.job_path(endpoint, ref.job_id, ref.context, status)
        except ValueError as exc:
            raise ContractMismatchError(
                f"{self.provider}: {exc}", provider=self.provider, job_id=ref.job_id
            ) from None
        return self._on_origin(url, ref.job_id)

    async def fetch_result(self, ref: JobRef, status: JobStatus | None = None) -> ResultT:
        """The typed result of a succeeded job (from its result endpoint, if declared).

        A result request that fails in a way that may pass (5xx, network, 429) is
        retried ``SUBMIT_ATTEMPTS`` times in all, seconds apart (:meth:`retrying`).

        Args:
            ref: The job.
            status: Its final status (needed where the result is in it, or where
                the result URL names one of its fields).

        Raises:
            ContractMismatchError: the result is not what the contract declares (not
                JSON, not an object, not what ``build_result`` reads). Never retried.
            ResultUnavailableError: the result request still failed after its attempts.
            JobFailedError, JobCancelledError, JobExpiredError: the result request
                answered an HTTP status the contract's ``result_ended`` maps.
        """
        reply = None
        endpoint = self.contract.result
        if endpoint is None:
            if status is None:
                raise ValueError(f"{self.provider} results are in the final status: pass it")
            body = status.payload
        else:
            url = self._job_url(endpoint, ref, status.payload if status else None)
            reply = await self._result_reply(endpoint, url, ref, status)
            body = reply.body
        try:
            return self.credentials.build_result(ref, body)
        except ValueError as exc:
            raise ContractMismatchError(
                f"{self.provider} result does not match the documented shape: "
                f"{_first_problem(exc)}",
                provider=self.provider,
                job_id=ref.job_id,
                path=reply.path if reply else None,
                http_status=reply.status_code if reply else None,
            ) from None

    async def _result_reply(
        self, endpoint: Endpoint, url: str, ref: JobRef, status: JobStatus | None
    ) -> JsonReply:
        """The result response, within a few attempts; see :meth:`fetch_result`."""

        async def once() -> JsonReply:
            try:
                return await self.request(endpoint.method, url, job_id=ref.job_id, polling=True)
            except MalformedResponseError as exc:
                raise ContractMismatchError(
                    f"{exc.message} at the result URL {url}; the contract reads a JSON object "
                    "there",
                    provider=self.provider,
                    job_id=ref.job_id,
                    path=exc.path,
                    http_status=exc.http_status,
                ) from None

        try:
            return await self.retrying(once, resend=True, what="result fetch")
        except TransientRequestError as exc:
            raise ResultUnavailableError(
                f"the result URL {url} still failed after {SUBMIT_ATTEMPTS} attempts: "
                f"{exc.message}",
                provider=self.provider,
                job_id=ref.job_id,
                path=exc.path,
                http_status=exc.http_status,
            ) from None
        except PollerError as exc:
            ended = self.contract.result_ended.get(exc.http_status or 0)
            if ended is None:
                raise
            final = status or JobStatus(job_id=ref.job_id, state=JobState.SUCCEEDED)
            raise_for_outcome(
                final.model_copy(
                    update={
                        "state": JobState(ended),
                        "error_code": str(exc.http_status),
                        "error_message": exc.message,
                    }
                ),
                provider=self.provider,
            )
            raise  # pragma: no cover (raise_for_outcome raised)

    async def wait_for_result(
        self,
        ref: JobRef,
        policy: PollPolicy | None = None,
        *,
        logger: Logger | None = None,
        on_change: StateChangeHook | None = None,
        wakeup: Wakeup | None = None,
        on_status: StatusHook | None = None,
    ) -> ResultT:
        """Wait for ``ref`` to end and return its typed result: the one wait-then-fetch path.

        Raises:
            JobFailedError, JobCancelledError, JobExpiredError: the job ended otherwise.
            WaitTimeoutError: the deadline passed first.
            ProviderUnavailableError: the provider stayed unreachable.
        """
        status = await self.wait(
            ref, policy, logger=logger, on_change=on_change, wakeup=wakeup, on_status=on_status
        )
        return await self.fetch_result(ref, status)

    async def cancel(self, ref: JobRef) -> bool:
        """Ask the provider to cancel the job.

        Returns:
            True if a cancel request was accepted; False where the provider has no
            documented cancel endpoint (the job then keeps running).
        """
        if self.contract.cancel is None:
            return False
        path = self._job_url(self.contract.cancel, ref)
        await self.request(self.contract.cancel.method, path, job_id=ref.job_id)
        return True


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every pool of the process (loading the CA bundle costs ~0.5 s).

    httpx builds a context per client by default; a client has several pools.
    """
    return httpx.create_ssl_context()


def _pool_sizes(connections: int, per_pool: int) -> list[int]:
    """``connections`` split into as few pools of at most ``per_pool`` as possible, evenly."""
    count = -(-connections // per_pool)
    base, extra = divmod(connections, count)
    return [base + (1 if index < extra else 0) for index in range(count)]


def _first_problem(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{first['msg']} at {'.'.join(str(p) for p in first['loc']) or 'the top'}"
    return str(exc)


# event loop -> pool key -> client. Keyed by value, not by block instance, so copies of
# one block (Prefect copies task parameters) share one pool and one rate budget; keyed
# by loop because an httpx client is bound to the loop it was first used on. Not weakly:
# a client refers to its loop (its semaphores, events, connections), so a weak key
# would never die; the clients of closed loops are let go at the next call instead.
_shared: dict[asyncio.AbstractEventLoop, dict[tuple[str, str], Any]] = {}


def shared_client(credentials: JobApiBlock[ResultT]) -> JobApiClient[ResultT]:
    """The pooled client of ``credentials`` on the running event loop, shared by every task.

    It lives as long as the loop; :func:`close_shared_clients` closes them early.
    """
    loop = asyncio.get_running_loop()
    for closed in [other for other in _shared if other.is_closed()]:
        # Nothing can close them now (that takes their loop); their leases expire.
        del _shared[closed]
    per_block = _shared.setdefault(loop, {})
    key = credentials.pool_key()
    client: JobApiClient[ResultT] | None = per_block.get(key)
    if client is None or client.is_closed:
        client = JobApiClient(credentials)
        per_block[key] = client
    return client


async def close_shared_clients() -> None:
    """Close every shared client of the running event loop."""
    for client in _shared.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()
