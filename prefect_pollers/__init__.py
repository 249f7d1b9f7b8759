"""prefect-pollers: remote asynchronous job APIs as first-class Prefect 3 tasks.

Submit a job, wait for its terminal state on a backoff policy that honours what the
server says, and get a typed result or a typed error.

The names below are the public API. The blocks are imported with the package, so
Prefect's ``prefect.collections`` entry point registers them and a saved block loads
by its slug from generic Prefect code. Request and result models, provider presets
and the client live in :mod:`prefect_pollers.providers` and
:mod:`prefect_pollers.client`; test helpers (simulator, virtual clock, demo
registry) in :mod:`prefect_pollers.testing`. :mod:`prefect_pollers.engine`, the pure
polling machinery, imports without Prefect.
"""

from importlib.metadata import version as _version

from prefect_pollers.engine import (
    AuthenticationError,
    BadRequestError,
    ContractMismatchError,
    InvalidRequestError,
    JobCancelledError,
    JobEndedError,
    JobExpiredError,
    JobFailedError,
    JobRef,
    JobState,
    JobStatus,
    PollerError,
    PollPolicy,
    ProviderUnavailableError,
    ResultUnavailableError,
    WaitTimeoutError,
)

__version__ = _version("prefect-pollers")

try:
    from prefect_pollers.batch import BatchItem, BatchOutcome, Outcome, run_batch
    from prefect_pollers.batch.outcome_files import OutcomeFiles
    from prefect_pollers.batch.provider_batches import run_provider_batch
    from prefect_pollers.durable import DurableWait
    from prefect_pollers.ops.cancellation import cancel_remote_jobs
    from prefect_pollers.providers import (
        AnthropicBatchCredentials,
        ApixoCredentials,
        ExonaCredentials,
        HttpJobApi,
        JobApiCredentials,
        JobResult,
        ModelRouteCredentials,
        OpenAIBatchCredentials,
        TwynCredentials,
    )
    from prefect_pollers.tasks.job_block import PollerJob, PollerJobRun
    from prefect_pollers.tasks.submit_wait import run_job, submit_job, wait_for_job
except ModuleNotFoundError as _missing:  # the engine alone, in a process without Prefect
    if (_missing.name or "").partition(".")[0] != "prefect":
        raise

__all__ = [
    "AnthropicBatchCredentials",
    "ApixoCredentials",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchOutcome",
    "ContractMismatchError",
    "DurableWait",
    "ExonaCredentials",
    "HttpJobApi",
    "InvalidRequestError",
    "JobApiCredentials",
    "JobCancelledError",
    "JobEndedError",
    "JobExpiredError",
    "JobFailedError",
    "JobRef",
    "JobResult",
    "JobState",
    "JobStatus",
    "ModelRouteCredentials",
    "OpenAIBatchCredentials",
    "Outcome",
    "OutcomeFiles",
    "PollPolicy",
    "PollerError",
    "PollerJob",
    "PollerJobRun",
    "ProviderUnavailableError",
    "ResultUnavailableError",
    "TwynCredentials",
    "WaitTimeoutError",
    "__version__",
    "cancel_remote_jobs",
    "run_batch",
    "run_job",
    "run_provider_batch",
    "submit_job",
    "wait_for_job",
]
