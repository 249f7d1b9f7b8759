"""prefect-pollers: remote asynchronous job APIs as first-class Prefect 3 tasks.

Submit a job, wait for its terminal state on a backoff policy that honours what the
server says, and get a typed result or a typed error.

The names below are imported on first use, so that ``prefect_pollers.engine`` (the
pure polling machinery) imports without Prefect.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_pollers.batch import (
        BatchItem,
        BatchOutcome,
        Outcome,
        run_batch,
    )
    from prefect_pollers.cancellation import (
        cancel_remote_jobs,
    )
    from prefect_pollers.client import (
        JobApiClient,
        close_shared_clients,
        shared_client,
    )
    from prefect_pollers.durable import (
        DurableWait,
        PollerService,
        ensure_resume_automation,
    )
    from prefect_pollers.engine import (
        AuthenticationError,
        BadRequestError,
        InvalidRequestError,
        JobCancelledError,
        JobEndedError,
        JobExpiredError,
        JobFailedError,
        JobNotFoundError,
        JobRef,
        JobState,
        JobStatus,
        MalformedResponseError,
        PhaseDeadlineError,
        PollerError,
        PollPolicy,
        ProviderUnavailableError,
        RateLimitedError,
        ServerHints,
        StatusMap,
        TransientRequestError,
        VirtualClock,
        WaitTimeoutError,
        use_clock,
    )
    from prefect_pollers.event_outbox import (
        reconcile_job_events,
    )
    from prefect_pollers.idempotency import (
        default_scope,
    )
    from prefect_pollers.providers import (
        PROVIDERS,
        ApixoCredentials,
        ApixoTaskRequest,
        ApixoTaskResult,
        Endpoint,
        ExonaCredentials,
        ExonaRiskAssessment,
        ExonaScanRequest,
        ExonaScanResult,
        HttpJobApi,
        HttpJobRequest,
        HttpJobResult,
        JobApiContract,
        JobApiCredentials,
        JobResult,
        ModelRouteCredentials,
        ModelRouteExecutionRequest,
        ModelRouteResult,
        ModelRouteUsage,
        ProviderEntry,
        TwynCredentials,
        TwynSimulationRequest,
        TwynSimulationResult,
        apixo_policy,
        exona_policy,
        load_credentials,
        modelroute_policy,
        provider_entry,
        twyn_policy,
    )
    from prefect_pollers.tables import (
        publish_table,
    )
    from prefect_pollers.tasks import (
        run_job,
        submit_job,
        wait_for_job,
    )

_HOME: dict[str, str] = {
    "AuthenticationError": "prefect_pollers.engine",
    "BadRequestError": "prefect_pollers.engine",
    "InvalidRequestError": "prefect_pollers.engine",
    "JobCancelledError": "prefect_pollers.engine",
    "JobEndedError": "prefect_pollers.engine",
    "JobExpiredError": "prefect_pollers.engine",
    "JobFailedError": "prefect_pollers.engine",
    "JobNotFoundError": "prefect_pollers.engine",
    "JobRef": "prefect_pollers.engine",
    "JobState": "prefect_pollers.engine",
    "JobStatus": "prefect_pollers.engine",
    "MalformedResponseError": "prefect_pollers.engine",
    "PhaseDeadlineError": "prefect_pollers.engine",
    "reconcile_job_events": "prefect_pollers.event_outbox",
    "PollPolicy": "prefect_pollers.engine",
    "PollerError": "prefect_pollers.engine",
    "ProviderUnavailableError": "prefect_pollers.engine",
    "RateLimitedError": "prefect_pollers.engine",
    "ServerHints": "prefect_pollers.engine",
    "StatusMap": "prefect_pollers.engine",
    "TransientRequestError": "prefect_pollers.engine",
    "VirtualClock": "prefect_pollers.engine",
    "WaitTimeoutError": "prefect_pollers.engine",
    "use_clock": "prefect_pollers.engine",
    "ApixoCredentials": "prefect_pollers.providers",
    "ApixoTaskRequest": "prefect_pollers.providers",
    "ApixoTaskResult": "prefect_pollers.providers",
    "Endpoint": "prefect_pollers.providers",
    "ExonaCredentials": "prefect_pollers.providers",
    "ExonaRiskAssessment": "prefect_pollers.providers",
    "ExonaScanRequest": "prefect_pollers.providers",
    "ExonaScanResult": "prefect_pollers.providers",
    "HttpJobApi": "prefect_pollers.providers",
    "HttpJobRequest": "prefect_pollers.providers",
    "HttpJobResult": "prefect_pollers.providers",
    "JobApiContract": "prefect_pollers.providers",
    "JobApiCredentials": "prefect_pollers.providers",
    "JobResult": "prefect_pollers.providers",
    "ModelRouteCredentials": "prefect_pollers.providers",
    "ModelRouteExecutionRequest": "prefect_pollers.providers",
    "ModelRouteResult": "prefect_pollers.providers",
    "ModelRouteUsage": "prefect_pollers.providers",
    "PROVIDERS": "prefect_pollers.providers",
    "ProviderEntry": "prefect_pollers.providers",
    "TwynCredentials": "prefect_pollers.providers",
    "TwynSimulationRequest": "prefect_pollers.providers",
    "TwynSimulationResult": "prefect_pollers.providers",
    "apixo_policy": "prefect_pollers.providers",
    "exona_policy": "prefect_pollers.providers",
    "load_credentials": "prefect_pollers.providers",
    "modelroute_policy": "prefect_pollers.providers",
    "provider_entry": "prefect_pollers.providers",
    "twyn_policy": "prefect_pollers.providers",
    "JobApiClient": "prefect_pollers.client",
    "close_shared_clients": "prefect_pollers.client",
    "shared_client": "prefect_pollers.client",
    "run_job": "prefect_pollers.tasks",
    "submit_job": "prefect_pollers.tasks",
    "wait_for_job": "prefect_pollers.tasks",
    "BatchItem": "prefect_pollers.batch",
    "BatchOutcome": "prefect_pollers.batch",
    "Outcome": "prefect_pollers.batch",
    "run_batch": "prefect_pollers.batch",
    "cancel_remote_jobs": "prefect_pollers.cancellation",
    "DurableWait": "prefect_pollers.durable",
    "PollerService": "prefect_pollers.durable",
    "ensure_resume_automation": "prefect_pollers.durable",
    "publish_table": "prefect_pollers.tables",
    "default_scope": "prefect_pollers.idempotency",
}

__all__ = [
    "PROVIDERS",
    "ApixoCredentials",
    "ApixoTaskRequest",
    "ApixoTaskResult",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchOutcome",
    "DurableWait",
    "Endpoint",
    "ExonaCredentials",
    "ExonaRiskAssessment",
    "ExonaScanRequest",
    "ExonaScanResult",
    "HttpJobApi",
    "HttpJobRequest",
    "HttpJobResult",
    "InvalidRequestError",
    "JobApiClient",
    "JobApiContract",
    "JobApiCredentials",
    "JobCancelledError",
    "JobEndedError",
    "JobExpiredError",
    "JobFailedError",
    "JobNotFoundError",
    "JobRef",
    "JobResult",
    "JobState",
    "JobStatus",
    "MalformedResponseError",
    "ModelRouteCredentials",
    "ModelRouteExecutionRequest",
    "ModelRouteResult",
    "ModelRouteUsage",
    "Outcome",
    "PhaseDeadlineError",
    "PollPolicy",
    "PollerError",
    "PollerService",
    "ProviderEntry",
    "ProviderUnavailableError",
    "RateLimitedError",
    "ServerHints",
    "StatusMap",
    "TransientRequestError",
    "TwynCredentials",
    "TwynSimulationRequest",
    "TwynSimulationResult",
    "VirtualClock",
    "WaitTimeoutError",
    "apixo_policy",
    "cancel_remote_jobs",
    "close_shared_clients",
    "default_scope",
    "ensure_resume_automation",
    "exona_policy",
    "load_credentials",
    "modelroute_policy",
    "provider_entry",
    "publish_table",
    "reconcile_job_events",
    "run_batch",
    "run_job",
    "shared_client",
    "submit_job",
    "twyn_policy",
    "use_clock",
    "wait_for_job",
]


def __getattr__(name: str) -> Any:
    """Import a public name from the module it lives in, on first use."""
    if name not in _HOME:
        raise AttributeError(f"module 'prefect_pollers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
