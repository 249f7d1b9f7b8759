"""One JSON request against a job API, its server hints, and its failures as typed errors."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from prefect_pollers.engine.errors import (
    AuthenticationError,
    BadRequestError,
    JobNotFoundError,
    MalformedResponseError,
    PollerError,
    RateLimitedError,
    TransientRequestError,
)
from prefect_pollers.engine.models import ServerHints


@dataclass(frozen=True)
class JsonReply:
    """A successful JSON response: its body, HTTP status, URL path and server hints."""

    body: dict[str, Any]
    status_code: int
    hints: ServerHints
    path: str = ""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for, in either of its forms.

    Args:
        value: The header: delta-seconds (``"120"``, decimals accepted) or an
            HTTP-date (``"Wed, 21 Oct 2026 07:28:00 GMT"``).
        now: Epoch seconds to measure an HTTP-date from (default: the wall clock).

    Returns:
        Seconds, never negative; None if the header is absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    try:
        return int(float(headers[name]))
    except (KeyError, ValueError):
        return None


RateLimitReset = Literal["epoch", "delta"]
"""How an API states ``X-RateLimit-Reset``: ``epoch`` seconds (``1710924600``), or
``delta``: seconds from now (``30``)."""


def parse_hints(
    headers: httpx.Headers, *, now: float | None = None, ratelimit_reset: RateLimitReset = "epoch"
) -> ServerHints:
    """Read ``Retry-After`` and the ``X-RateLimit-*`` headers of a response.

    Args:
        headers: The response's headers.
        now: Epoch seconds the response came at (default: the wall clock), to
            measure HTTP-date and ``delta`` values from.
        ratelimit_reset: How the API states ``X-RateLimit-Reset``; the hints hold
            epoch seconds either way.
    """
    reset = headers.get("X-RateLimit-Reset")
    try:
        reset_at = float(reset) if reset is not None else None
    except ValueError:
        reset_at = None
    if reset_at is not None and ratelimit_reset == "delta":
        reset_at += time.time() if now is None else now
    return ServerHints(
        retry_after=parse_retry_after(headers.get("Retry-After"), now=now),
        ratelimit_limit=_int_header(headers, "X-RateLimit-Limit"),
        ratelimit_remaining=_int_header(headers, "X-RateLimit-Remaining"),
        ratelimit_reset=reset_at,
    )


STALE_CONNECTION_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)
"""Failures that, before any response byte on a reused connection, mean it was stale.

httpcore suppresses a ``WriteError`` while sending and then reads: a server that had
closed the idle connection gives ``RemoteProtocolError`` ("Server disconnected without
sending a response") or, after a reset, ``ReadError``.
"""


class ConnectionTrace:
    """httpcore's trace events of one request: was its connection reused, did a response start.

    Passed as the request's ``trace`` extension. Transports that are not httpcore's
    pool (``MockTransport``, ``ASGITransport``) emit no events: then nothing is known
    and no failure counts as a stale connection.
    """

    __slots__ = ("new_connection", "response_started", "traced")

    def __init__(self) -> None:
        self.traced = False
        self.new_connection = False
        self.response_started = False

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        """Record one event (``connection.connect_tcp.started``, ...)."""
        self.traced = True
        if ".connect_" in name:  # connection.connect_tcp / _unix_socket, socks.connect_tcp
            self.new_connection = True
        elif name.endswith("receive_response_headers.complete"):
            self.response_started = True

    def stale(self, exc: Exception) -> bool:
        """Whether ``exc`` met a reused connection before any response header arrived."""
        return (
            isinstance(exc, STALE_CONNECTION_ERRORS)
            and self.traced
            and not self.new_connection
            and not self.response_started
        )


def _provider_message(response: httpx.Response, secrets: Sequence[str]) -> str:
    """The error message a provider put in a failed response, shortened, secrets masked."""
    message = _raw_provider_message(response)
    for secret in secrets:
        if secret:
            message = message.replace(secret, "**********")
    return message


def _raw_provider_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:200] + "...") if len(text) > 200 else text or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            return f"[{code}] {message}" if code else str(message)
        for key in ("message", "detail", "error", "failMsg", "msg"):
            if body.get(key):
                return str(body[key])
    return str(body)[:200]


async def send_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    job_id: str | None = None,
    json: Any = None,
    files: Any = None,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    polling: bool = False,
    creates: bool = False,
    idempotency_key: str | None = None,
    not_created_statuses: frozenset[int] = frozenset(),
    secrets: Sequence[str] = (),
    now: float | None = None,
    ratelimit_reset: RateLimitReset = "epoch",
    stream: bool = False,
) -> tuple[httpx.Response, ServerHints, dict[str, Any]]:
    """Send one request; return its 2xx response, or raise a typed error.

    The arguments are :func:`request_json`'s, and ``files`` / ``data`` (a multipart
    upload) and ``stream``: the response's body is then not read (the caller reads it
    and closes the response).

    Returns:
        The response, its server hints, and where it was sent (for errors).
    """
    trace = ConnectionTrace()
    request = client.build_request(
        method,
        url,
        json=json,
        files=files,
        data=data,
        headers=headers,
        extensions={"trace": trace},
    )
    where: dict[str, Any] = {
        "provider": provider,
        "job_id": job_id,
        "path": request.url.path,
        "idempotency_key": idempotency_key,
    }
    try:
        response = await client.send(request, stream=stream)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TransientRequestError(
            f"{type(exc).__name__}: could not connect", request_sent=False, **where
        ) from None
    except httpx.TimeoutException as exc:
        raise TransientRequestError(
            f"{type(exc).__name__}: the request timed out", may_have_created=creates, **where
        ) from None
    except httpx.TransportError as exc:
        stale = trace.stale(exc)
        note = " (on a reused keep-alive connection, before any response)" if stale else ""
        raise TransientRequestError(
            f"{type(exc).__name__}: {exc}{note}",
            may_have_created=creates,
            stale_connection=stale,
            **where,
        ) from None
    hints = parse_hints(response.headers, now=now, ratelimit_reset=ratelimit_reset)
    status = response.status_code
    where.update(http_status=status, hints=hints)
    if status >= 400:
        if stream:
            try:
                await response.aread()
            except httpx.HTTPError:
                pass  # the status says enough
            finally:
                await response.aclose()
        message = _provider_message(response, secrets)
        created = creates and status not in not_created_statuses
        raise _http_error(status, message, polling, created, where)
    return response, hints, where


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    job_id: str | None = None,
    json: Any = None,
    files: Any = None,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    polling: bool = False,
    creates: bool = False,
    idempotency_key: str | None = None,
    not_created_statuses: frozenset[int] = frozenset(),
    secrets: Sequence[str] = (),
    now: float | None = None,
    ratelimit_reset: RateLimitReset = "epoch",
) -> JsonReply:
    """Send one request and return its JSON body, or raise a typed error.

    Args:
        client: The pooled client of a credentials block.
        method: HTTP method.
        url: Absolute URL or a path relative to the client's base URL.
        provider: Provider name, for error messages.
        job_id: The job the request concerns, for error messages.
        json: The JSON body to send.
        files: Files of a multipart body (httpx's ``files``), e.g. an upload.
        data: The other fields of a multipart body.
        headers: Extra headers (auth is set on the client).
        polling: True for status calls: a 404 then means the job is unknown.
        creates: True for a submit: an error after which the job may exist all the
            same (a timeout, a dropped connection, a 5xx, an unreadable 2xx body)
            then says so (``may_have_created``).
        idempotency_key: The submit's idempotency key, named in its errors.
        not_created_statuses: HTTP statuses the provider documents answering a
            submit with without creating the job (a proxy in front of it promises
            nothing: by default every 5xx may have created it).
        secrets: Strings (API keys) masked in provider messages quoted in errors.
        now: Epoch seconds for HTTP-date ``Retry-After`` headers.
        ratelimit_reset: How the API states ``X-RateLimit-Reset`` (epoch or delta).

    Raises:
        AuthenticationError: on 401/403.
        BadRequestError: on 400/409/422 (and 404 outside polling).
        JobNotFoundError: on 404 while polling.
        RateLimitedError: on 429.
        TransientRequestError: on network errors, timeouts, 408, 425 and 5xx;
            ``stale_connection`` when a reused keep-alive connection failed before
            any response.
        MalformedResponseError: when a 2xx body is not a JSON object.
    """
    response, hints, where = await send_request(
        client,
        method,
        url,
        provider=provider,
        job_id=job_id,
        json=json,
        files=files,
        data=data,
        headers=headers,
        polling=polling,
        creates=creates,
        idempotency_key=idempotency_key,
        not_created_statuses=not_created_statuses,
        secrets=secrets,
        now=now,
        ratelimit_reset=ratelimit_reset,
    )
    try:
        body = response.json()
    except ValueError:
        kind = "an empty body" if not response.content else "a body that is not JSON"
        raise MalformedResponseError(
            f"{provider} returned {kind}", may_have_created=creates, **where
        ) from None
    if not isinstance(body, dict):
        raise MalformedResponseError(
            f"{provider} returned JSON {type(body).__name__}, expected an object",
            may_have_created=creates,
            **where,
        )
    return JsonReply(body=body, status_code=response.status_code, hints=hints, path=where["path"])


def _http_error(
    status: int, message: str, polling: bool, creates: bool, where: dict[str, Any]
) -> PollerError:
    hints: ServerHints = where["hints"]
    provider = where["provider"]
    if status == 429:
        return RateLimitedError(f"rate limited: {message}", retry_after=hints.retry_after, **where)
    if status in (408, 425) or status >= 500:
        # A 502/503/504 may come from a proxy whose upstream created the job all the
        # same: only the provider's contract says otherwise (``not_created_statuses``).
        return TransientRequestError(
            f"server error: {message}",
            retry_after=hints.retry_after,
            may_have_created=creates,
            **where,
        )
    error_type: type[PollerError] = BadRequestError
    if status in (401, 403):
        error_type = AuthenticationError
    elif status == 404 and polling:
        error_type = JobNotFoundError
    return error_type(f"{provider} refused the request: {message}", **where)
