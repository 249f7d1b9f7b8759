"""Pure polling machinery: policies, the wait loop, HTTP error mapping. No Prefect here."""

from prefect_pollers.engine.clock import Clock, SystemClock, VirtualClock, current_clock, use_clock
from prefect_pollers.engine.errors import (
    AuthenticationError,
    BadRequestError,
    ContractMismatchError,
    InvalidRequestError,
    JobCancelledError,
    JobEndedError,
    JobExpiredError,
    JobFailedError,
    JobNotFoundError,
    MalformedResponseError,
    PhaseDeadlineError,
    PollerError,
    ProviderUnavailableError,
    RateLimitedError,
    ResultUnavailableError,
    TransientRequestError,
    WaitTimeoutError,
)
from prefect_pollers.engine.http import JsonReply, parse_hints, parse_retry_after, request_json
from prefect_pollers.engine.models import CallbackBinding, JobRef, JobState, JobStatus, ServerHints
from prefect_pollers.engine.policy import PollPolicy, error_delay, next_delay
from prefect_pollers.engine.status_map import StatusMap
from prefect_pollers.engine.wait import raise_for_outcome, wait_for_terminal
from prefect_pollers.engine.wakeup import Wakeup

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "CallbackBinding",
    "Clock",
    "ContractMismatchError",
    "InvalidRequestError",
    "JobCancelledError",
    "JobEndedError",
    "JobExpiredError",
    "JobFailedError",
    "JobNotFoundError",
    "JobRef",
    "JobState",
    "JobStatus",
    "JsonReply",
    "MalformedResponseError",
    "PhaseDeadlineError",
    "PollPolicy",
    "PollerError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "ResultUnavailableError",
    "ServerHints",
    "StatusMap",
    "SystemClock",
    "TransientRequestError",
    "VirtualClock",
    "WaitTimeoutError",
    "Wakeup",
    "current_clock",
    "error_delay",
    "next_delay",
    "parse_hints",
    "parse_retry_after",
    "raise_for_outcome",
    "request_json",
    "use_clock",
    "wait_for_terminal",
]
