"""Prefect tasks to submit a job, wait for it, or both, generic over providers.

- :func:`submit_job` is idempotent: its result is cached under the caller's
  idempotency key (or, without one, under the flow run and the request), so a
  retried or re-run flow gets the job it already submitted back instead of
  submitting twice. It only retries errors after which the job surely was not
  created (connection refused, 429, 502, 503).
- :func:`wait_for_job` is never cached. It polls on the policy's schedule inside
  one task run, logs state changes at INFO (each poll at DEBUG), emits a Prefect
  event on each state change, and when the wait itself fails (the provider stayed
  unreachable past the error budget) Prefect retries it with exponential backoff:
  the retry re-attaches to the same job, whose deadline still counts from submission.
- :func:`run_job` does both.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import aget_state_exception
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from prefect_pollers.cancellation import tracked
from prefect_pollers.engine import (
    JobRef,
    PollerError,
    PollPolicy,
    RateLimitedError,
    TransientRequestError,
    current_clock,
)
from prefect_pollers.events import announce_submitted, emit_state_change
from prefect_pollers.providers.base import JobApiCredentials


def _request_digest(credentials: JobApiCredentials, request: BaseModel | dict[str, Any]) -> str:
    parsed = credentials.parse_request(request)
    text = json.dumps(parsed.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def submit_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The cache key that makes :func:`submit_job` idempotent.

    With an idempotency key: provider, base URL and key, across flow runs. Without
    one: the flow run and the request's content, so a retry of the same flow run
    re-attaches. The API key is never part of it.
    """
    credentials: JobApiCredentials = parameters["credentials"]
    key = parameters.get("idempotency_key")
    if not key:
        scope = flow_run.get_id() or "no-flow-run"
        key = f"{scope}-{_request_digest(credentials, parameters['request'])}"
    return idempotency_record_key(credentials, key)


def idempotency_record_key(credentials: JobApiCredentials, idempotency_key: str) -> str:
    """Where the ref of the job submitted under ``idempotency_key`` is recorded.

    Shared by :func:`submit_job`'s cache and batched submits, so both modes
    re-attach to each other's jobs. Names the provider and a digest of the base
    URL, never the API key.
    """
    endpoint = hashlib.sha256(credentials.base_url.encode()).hexdigest()[:12]
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return f"prefect-pollers-submit-{credentials.provider}-{endpoint}-{digest}"


def _submit_run_name() -> str:
    parameters = TaskRunContext.get().parameters if TaskRunContext.get() else {}
    credentials = parameters.get("credentials")
    provider = getattr(credentials, "provider", "job")
    return f"submit-{provider}-{parameters.get('idempotency_key') or 'job'}"


def _wait_run_name() -> str:
    parameters = TaskRunContext.get().parameters if TaskRunContext.get() else {}
    job = parameters.get("job")
    return f"wait-{job.provider}-{job.job_id}" if isinstance(job, JobRef) else "wait-job"


async def _failure(state: State) -> BaseException | None:
    if isinstance(state.data, BaseException):
        return state.data
    return await aget_state_exception(state)


def submit_safe_to_retry(exc: BaseException | None) -> bool:
    """Whether a failed submit surely created no job, so retrying cannot duplicate it."""
    if isinstance(exc, RateLimitedError):
        return True
    if isinstance(exc, TransientRequestError):
        return not exc.request_sent or exc.http_status in (502, 503)
    return False


async def submit_with_safe_retries(
    credentials: JobApiCredentials,
    request: BaseModel | dict[str, Any],
    idempotency_key: str | None,
    *,
    attempts: int = 4,
) -> JobRef:
    """Submit, retrying (``attempts`` in all) only when the job surely was not created.

    Backs off 1 s, 2 s, 4 s, or as long as the server's ``Retry-After`` says.
    """
    clock = current_clock()
    for attempt in range(1, attempts):
        try:
            return await credentials.submit(request, idempotency_key=idempotency_key)
        except PollerError as exc:
            if not submit_safe_to_retry(exc):
                raise
            await clock.sleep(getattr(exc, "retry_after", None) or 2.0 ** (attempt - 1))
    return await credentials.submit(request, idempotency_key=idempotency_key)


async def retry_submit_when_not_created(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry a submit only when the job surely was not created."""
    return submit_safe_to_retry(await _failure(state))


async def retry_wait_when_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry a wait that failed for a reason a later poll can overcome."""
    exc = await _failure(state)
    return isinstance(exc, PollerError) and exc.retryable


@task(
    name="submit-job",
    task_run_name=_submit_run_name,
    cache_key_fn=submit_cache_key,
    persist_result=True,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_submit_when_not_created,
)
async def submit_job(
    credentials: JobApiCredentials,
    request: BaseModel | dict[str, Any],
    idempotency_key: str | None = None,
) -> JobRef:
    """Submit one job to the provider of ``credentials``; idempotent per key.

    Args:
        credentials: The provider's credentials block.
        request: The provider's request model, or a dict of its fields.
        idempotency_key: Names this submission: a flow run (retried or new) that
            submits with the same key gets the same job back.

    Returns:
        The job's ref, to pass to :func:`wait_for_job`.
    """
    ref = await submit_with_safe_retries(credentials, request, idempotency_key)
    announce_submitted(credentials, ref)
    return ref


@task(
    name="wait-for-job",
    task_run_name=_wait_run_name,
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_condition_fn=retry_wait_when_transient,
)
async def wait_for_job(
    credentials: JobApiCredentials,
    job: JobRef,
    policy: PollPolicy | None = None,
) -> BaseModel:
    """Wait for a submitted job to finish and return its typed result.

    Args:
        credentials: The provider's credentials block.
        job: The ref :func:`submit_job` returned (or one rebuilt from a job id).
        policy: The poll schedule; the provider's default preset if omitted.

    Returns:
        The provider's result model (e.g. ``ExonaScanResult``).

    Raises:
        JobFailedError, JobCancelledError, JobExpiredError: the job ended otherwise.
        WaitTimeoutError: the deadline passed first.
        ProviderUnavailableError: the provider stayed unreachable (retried by Prefect).
    """
    with tracked(credentials, job):
        status = await credentials.wait(
            job,
            policy,
            logger=get_run_logger(),
            on_change=lambda old, new: emit_state_change(old, new, job.provider),
        )
        return await credentials.fetch_result(job, status)


async def run_job(
    credentials: JobApiCredentials,
    request: BaseModel | dict[str, Any],
    *,
    idempotency_key: str | None = None,
    policy: PollPolicy | None = None,
) -> BaseModel:
    """Submit a job and wait for its result: :func:`submit_job` then :func:`wait_for_job`.

    Call it inside a flow; it makes two task runs.
    """
    ref = await submit_job(credentials, request, idempotency_key=idempotency_key)
    return await wait_for_job(credentials, ref, policy=policy)
