"""Typed errors raised by submits and waits.

Every error names the provider, and where known the job id, the URL path and the
HTTP status, and says what to do next. None of them ever carries an API key: they
are built from paths, statuses and provider messages only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect_pollers.engine.models import JobStatus


class PollerError(Exception):
    """Base class of every error prefect-pollers raises.

    Attributes:
        provider: The provider's short name (``exona``, ``twyn``, ...).
        job_id: The remote job id, when one is known.
        path: The URL path of the request that failed, when one did.
        http_status: The HTTP status of that request, when there was a response.
        retryable: Whether retrying the same call later may succeed.
    """

    retryable: bool = False
    hint: str = ""
    hints = None  # the ServerHints of the refused response, when there was one

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        job_id: str | None = None,
        path: str | None = None,
        http_status: int | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.job_id = job_id
        self.path = path
        self.http_status = http_status
        super().__init__(self._render())

    def _render(self) -> str:
        where = [f"provider={self.provider}"] if self.provider else []
        if self.job_id:
            where.append(f"job={self.job_id}")
        if self.path:
            where.append(f"path={self.path}")
        if self.http_status is not None:
            where.append(f"http={self.http_status}")
        text = f"{self.message} [{' '.join(where)}]" if where else self.message
        return f"{text}. {self.hint}" if self.hint else text

    def __reduce__(self):  # keep pickling (Prefect result storage) working
        return (
            _rebuild,
            (type(self), self.message, self.__dict__.copy()),
        )


def _rebuild(cls: type[PollerError], message: str, state: dict) -> PollerError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    error.args = (error._render(),)
    return error


class AuthenticationError(PollerError):
    """The provider refused the credentials (HTTP 401 or 403). Never retried."""

    hint = "Check the api_key of the credentials block; nothing was retried"


class BadRequestError(PollerError):
    """The provider refused the request as invalid (HTTP 400, 404 on submit, 422).

    Never retried: the same request would be refused again.
    """

    hint = "Fix the request (the provider's message says what is wrong); nothing was retried"


class InvalidRequestError(BadRequestError):
    """The request failed validation before it was sent: nothing reached the provider."""

    hint = "Fix the fields named above; nothing was sent"


class JobNotFoundError(PollerError):
    """The status endpoint does not know the job id (HTTP 404 while polling)."""

    hint = "Check the job id and the credentials' base_url; the job may belong to another account"


class MalformedResponseError(PollerError):
    """A response body was not the JSON the provider documents."""

    retryable = True
    hint = "The provider returned an unexpected body; it is retried within the error budget"


class TransientRequestError(PollerError):
    """A request failed in a way that may pass on retry (network, timeout, 5xx).

    Attributes:
        retry_after: Seconds the server asked us to wait, if it said.
        request_sent: False when the request surely never reached the server
            (connection refused), so even a submit may be retried safely.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        request_sent: bool = True,
        **where,
    ) -> None:
        self.retry_after = retry_after
        self.request_sent = request_sent
        super().__init__(message, **where)


class RateLimitedError(TransientRequestError):
    """The provider answered HTTP 429 Too Many Requests."""

    hint = "The wait honours Retry-After; lower concurrency or poll less often"


class ProviderUnavailableError(PollerError):
    """Request errors exhausted the wait's error budget.

    The job itself may still be running: a later wait can re-attach to it.
    """

    retryable = True
    hint = "The job may still be running: retry the wait with the same JobRef to re-attach"


class JobEndedError(PollerError):
    """Base class of the terminal outcomes that are not success.

    Attributes:
        status: The terminal ``JobStatus`` as the provider reported it.
        error_code: The provider's error code, if it gave one.
    """

    def __init__(self, message: str, *, status: JobStatus, **where) -> None:
        self.status = status
        self.error_code = status.error_code
        super().__init__(message, **where)


class JobFailedError(JobEndedError):
    """The provider reports that the job failed."""

    hint = "The provider's code and message say why; submit a corrected job to try again"


class JobCancelledError(JobEndedError):
    """The job was cancelled before it finished."""

    hint = "Submit the job again if it is still needed"


class JobExpiredError(JobEndedError):
    """The provider expired the job before it ran or finished."""

    hint = "Submit the job again; consider a larger deadline or fewer jobs at once"


class WaitTimeoutError(PollerError):
    """The wait reached its deadline before the job reached a terminal state.

    Attributes:
        last_status: The last status seen, or ``None`` if no poll succeeded.
    """

    retryable = False
    hint = "The job may still be running: wait again with the same JobRef and a larger deadline"

    def __init__(self, message: str, *, last_status: JobStatus | None, **where) -> None:
        self.last_status = last_status
        super().__init__(message, **where)


