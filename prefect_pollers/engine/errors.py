"""Typed errors raised by submits and waits.

Every error names the provider, and where known the job id, the idempotency key,
the URL path and the HTTP status, and says what to do next (its ``advice``). Each
failure is classified once, on the error itself: ``retryable`` (may the same call
succeed later?) and ``may_have_created`` (may a failed submit have created the job
all the same?). None of them ever carries an API key: they are built from paths,
statuses and provider messages with the key masked.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_pollers.engine.models import JobStatus, ServerHints


class PollerError(Exception):
    """Base class of every error prefect-pollers raises.

    Attributes:
        message: What went wrong, without the location.
        provider: The provider's short name (``exona``, ``twyn``, ...).
        job_id: The remote job id, when one is known.
        idempotency_key: The key of the submit that failed, when one did.
        path: The URL path of the request that failed, when one did.
        http_status: The HTTP status of that request, when there was a response.
        hints: The server hints (Retry-After, rate-limit headers) of the refused
            response, when there was one.
        retryable: Whether retrying the same call later may succeed.
        may_have_created: Whether a failed submit may have created the job all the
            same, so that submitting again could run it twice.
        advice: What to do about it.
    """

    retryable: bool = False
    advice: str = ""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        job_id: str | None = None,
        idempotency_key: str | None = None,
        path: str | None = None,
        http_status: int | None = None,
        hints: ServerHints | None = None,
        may_have_created: bool = False,
        advice: str | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.job_id = job_id
        self.idempotency_key = idempotency_key
        self.path = path
        self.http_status = http_status
        self.hints = hints
        self.may_have_created = may_have_created
        if advice is not None:
            self.advice = advice
        elif may_have_created:
            self.advice = may_have_created_advice(idempotency_key)
        super().__init__(self._text())

    def _text(self) -> str:
        where = [f"provider={self.provider}"] if self.provider else []
        if self.job_id:
            where.append(f"job={self.job_id}")
        if self.idempotency_key:
            where.append(f"key={self.idempotency_key}")
        if self.path:
            where.append(f"path={self.path}")
        if self.http_status is not None:
            where.append(f"http={self.http_status}")
        text = f"{self.message} [{' '.join(where)}]" if where else self.message
        return f"{text}. {self.advice}" if self.advice else text

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (Prefect's result storage) keeps every attribute, not just args.
        return (_rebuild, (type(self), self.__dict__.copy()))


def may_have_created_advice(idempotency_key: str | None) -> str:
    """What to do after a submit that may have created its job all the same.

    Args:
        idempotency_key: The submit's key, named with the ledger command that
            shows what is recorded under it.
    """
    if not idempotency_key:
        return (
            "The job may have been created all the same: look for it at the provider "
            "before submitting again, or it may run twice"
        )
    return (
        f"The job may have been created all the same (idempotency key {idempotency_key!r}): "
        f"run `prefect-pollers ledger show {shlex.quote(idempotency_key)}` to see what is "
        "recorded under the key, and look for the job at the provider before submitting "
        "again, or it may run twice"
    )


def _rebuild(cls: type[PollerError], state: dict[str, Any]) -> PollerError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error._text())
    return error


class AuthenticationError(PollerError):
    """The provider refused the credentials (HTTP 401 or 403). Never retried."""

    advice = "Check the api_key of the credentials block; nothing was retried"


class BadRequestError(PollerError):
    """The provider refused the request as invalid (HTTP 400, 404 on submit, 422).

    Never retried: the same request would be refused again.
    """

    advice = "Fix the request (the provider's message says what is wrong); nothing was retried"


class InvalidRequestError(BadRequestError):
    """The request failed validation before it was sent: nothing reached the provider."""

    advice = "Fix the fields named above; nothing was sent"


class JobNotFoundError(PollerError):
    """The status endpoint does not know the job id (HTTP 404 while polling)."""

    advice = "Check the job id and the credentials' base_url; the job may belong to another account"


class MalformedResponseError(PollerError):
    """A response body was not the JSON the provider documents."""

    retryable = True
    advice = "The provider returned an unexpected body; it is retried within the error budget"


class ContractMismatchError(MalformedResponseError):
    """A response lacks what the contract declares where asking again cannot help.

    A result body that is not JSON or not an object, one ``build_result`` cannot
    read, or a job URL template naming a field the API never sent. Never retried.
    """

    retryable = False
    advice = (
        "The API answered otherwise than its declaration says (the message names what was "
        "expected and what came): check the block's fields against the API's docs; "
        "nothing was retried"
    )


class TransientRequestError(PollerError):
    """A request failed in a way that may pass on retry (network, timeout, 5xx).

    Attributes:
        retry_after: Seconds the server asked us to wait, if it said.
        request_sent: False when the request surely never reached the server
            (connection refused, or held back on our side).
        stale_connection: True when it failed on a reused keep-alive connection
            before any byte of a response: most likely the server had closed the
            connection as idle and never read the request (the client re-sends such
            a request once, at once, where re-sending is safe).
    """

    retryable = True
    stale_connection: bool = False

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        request_sent: bool = True,
        stale_connection: bool = False,
        **where: Any,
    ) -> None:
        self.retry_after = retry_after
        self.request_sent = request_sent
        self.stale_connection = stale_connection
        super().__init__(message, **where)


class RateLimitedError(TransientRequestError):
    """The provider answered HTTP 429, or its rate-limit window is spent past a deadline."""

    advice = "The wait honours Retry-After; lower concurrency or poll less often"


class ProviderUnavailableError(PollerError):
    """Request errors exhausted the wait's error budget.

    The job itself may still be running: a later wait can re-attach to it.
    """

    retryable = True
    advice = "The job may still be running: retry the wait with the same JobRef to re-attach"


class ResultUnavailableError(PollerError):
    """A job ended, but its result URL kept failing (5xx, network, 429) for a few attempts.

    Not retried further: the job is done and its result may still be there later.
    """

    advice = (
        "The job has ended: fetch its result again later with the same JobRef "
        "(JobApiClient.fetch_result), or check the result URL named above"
    )


class JobEndedError(PollerError):
    """Base class of the terminal outcomes that are not success.

    Attributes:
        status: The terminal ``JobStatus`` as the provider reported it.
        error_code: The provider's error code, if it gave one.
    """

    def __init__(self, message: str, *, status: JobStatus, **where: Any) -> None:
        self.status = status
        self.error_code = status.error_code
        super().__init__(message, **where)


class JobFailedError(JobEndedError):
    """The provider reports that the job failed."""

    advice = "The provider's code and message say why; submit a corrected job to try again"


class JobCancelledError(JobEndedError):
    """The job was cancelled before it finished."""

    advice = "Submit the job again if it is still needed"


class JobExpiredError(JobEndedError):
    """The provider expired the job before it ran or finished."""

    advice = "Submit the job again; consider a larger deadline or fewer jobs at once"


class WaitTimeoutError(PollerError):
    """The wait reached its deadline before the job reached a terminal state.

    Attributes:
        last_status: The last status seen, or ``None`` if no poll succeeded.
    """

    advice = "The job may still be running: wait again with the same JobRef and a larger deadline"

    def __init__(self, message: str, *, last_status: JobStatus | None, **where: Any) -> None:
        self.last_status = last_status
        super().__init__(message, **where)


class PhaseDeadlineError(WaitTimeoutError):
    """The job stayed in one phase longer than the policy's ``phase_deadlines`` allow.

    Attributes:
        phase: The phase it is stuck in.
        limit: The seconds the policy allows in it.
    """

    advice = (
        "The job looks stuck: check it at the provider (it may still finish; wait again "
        "with the same JobRef, or cancel it)"
    )

    def __init__(
        self, message: str, *, phase: str, limit: float, last_status: JobStatus | None, **where: Any
    ) -> None:
        self.phase = phase
        self.limit = limit
        super().__init__(message, last_status=last_status, **where)
