"""prefect-pollers: remote asynchronous job APIs as first-class Prefect 3 tasks.

Submit a job, wait for its terminal state on a backoff policy that honours what the
server says, and get a typed result or a typed error.
"""

from prefect_pollers.engine import (
    AuthenticationError,
    BadRequestError,
    JobCancelledError,
    JobEndedError,
    JobExpiredError,
    JobFailedError,
    JobNotFoundError,
    JobRef,
    JobState,
    JobStatus,
    MalformedResponseError,
    PollerError,
    PollPolicy,
    ProviderUnavailableError,
    RateLimitedError,
    StatusMap,
    TransientRequestError,
    VirtualClock,
    WaitTimeoutError,
    use_clock,
)
from prefect_pollers.providers import (
    ExonaCredentials,
    ExonaScanRequest,
    ExonaScanResult,
    JobApiCredentials,
    exona_policy,
)
from prefect_pollers.tasks import run_job, submit_job, wait_for_job

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ExonaCredentials",
    "ExonaScanRequest",
    "ExonaScanResult",
    "JobApiCredentials",
    "JobCancelledError",
    "JobEndedError",
    "JobExpiredError",
    "JobFailedError",
    "JobNotFoundError",
    "JobRef",
    "JobState",
    "JobStatus",
    "MalformedResponseError",
    "PollPolicy",
    "PollerError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "StatusMap",
    "TransientRequestError",
    "VirtualClock",
    "WaitTimeoutError",
    "exona_policy",
    "run_job",
    "submit_job",
    "use_clock",
    "wait_for_job",
]
