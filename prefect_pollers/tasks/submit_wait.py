"""Prefect tasks to submit a job, wait for it, or both, generic over providers.

- :func:`submit_job` is idempotent: it reserves the caller's idempotency key (or,
  inside a flow run without one, the flow run and the request's digest) in the
  ledger (:mod:`prefect_pollers.ledger`) before it sends, so a retried or re-run
  flow, a batch or a second live copy of the run gets the job already submitted
  back instead of submitting twice. Its failures are retried in one place, the
  client's submit (only those after which the job surely was not created,
  honouring ``Retry-After``); the task itself is not retried by Prefect.
- :func:`wait_for_job` is never cached. It polls on the policy's schedule inside
  one task run, logs state changes at INFO (each poll at DEBUG), emits a Prefect
  event on each state change, and when the wait itself fails (the provider stayed
  unreachable past the error budget) Prefect retries it with exponential backoff:
  the retry re-attaches to the same job, whose deadline still counts from submission.
- :func:`run_job` does both.

With a block's callbacks on (:mod:`prefect_pollers.webhooks`), the submit sends the
receiver's URL for the job, and the wait is woken by its callback (in this process,
or from another through Prefect's event stream), polling only at the policy's slow
safety cadence until then.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.results import get_result_store
from prefect.runtime import flow_run
from prefect.states import aget_state_exception
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from prefect_pollers.client import shared_client
from prefect_pollers.engine import JobRef, PollerError, PollPolicy
from prefect_pollers.events.jobs import announce_submitted
from prefect_pollers.ledger import LedgerSubmitter
from prefect_pollers.ledger.idempotency import default_scope, request_digest
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.protocol import ResultT
from prefect_pollers.tasks.observed import observed_wait
from prefect_pollers.webhooks.subscription import listening_for_submit


def _submit_run_name() -> str:
    context = TaskRunContext.get()
    parameters = context.parameters if context and context.parameters else {}
    credentials = parameters.get("credentials")
    provider = getattr(credentials, "provider", "job")
    return f"submit-{provider}-{parameters.get('idempotency_key') or 'job'}"


def _wait_run_name() -> str:
    context = TaskRunContext.get()
    parameters = context.parameters if context and context.parameters else {}
    job = parameters.get("job")
    return f"wait-{job.provider}-{job.job_id}" if isinstance(job, JobRef) else "wait-job"


async def retry_wait_when_transient(task: Task[Any, Any], task_run: TaskRun, state: State) -> bool:
    """Retry a wait that failed for a reason a later poll can overcome."""
    exc = state.data if isinstance(state.data, BaseException) else await aget_state_exception(state)
    return isinstance(exc, PollerError) and exc.retryable


async def submit_once(
    credentials: JobApiCredentials[Any],
    request: BaseModel | dict[str, Any],
    idempotency_key: str | None = None,
) -> JobRef:
    """Submit one job through the ledger: each key creates at most one job.

    The body of :func:`submit_job` (which documents the arguments and errors),
    callable outside a task run: :meth:`prefect_pollers.PollerJob.trigger` uses it.
    """
    parsed = credentials.parse_request(request)
    flow_run_id = flow_run.get_id()
    key = idempotency_key or f"{default_scope()}-{request_digest(parsed)}"
    client = shared_client(credentials)

    async def send() -> JobRef:
        async with listening_for_submit(credentials, parsed, flow_run_id):
            return await client.submit(parsed, idempotency_key=key, flow_run_id=flow_run_id)

    store = get_result_store() if flow_run_id else None
    async with LedgerSubmitter(credentials, flow_run_id=flow_run_id, store=store) as submitter:
        ref, created = await submitter.submit(key, parsed, send)
    if created:
        announce_submitted(credentials, ref)
    return ref


@task(
    name="submit-job",
    task_run_name=_submit_run_name,
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def submit_job(
    credentials: JobApiCredentials[Any],
    request: BaseModel | dict[str, Any],
    idempotency_key: str | None = None,
) -> JobRef:
    """Submit one job to the provider of ``credentials``; idempotent per key.

    Args:
        credentials: The provider's credentials block.
        request: The provider's request model, or a dict of its fields.
        idempotency_key: Names this submission: a flow run (retried or new) that
            submits with the same key gets the same job back. Required outside a
            flow run; inside one it defaults to the flow run and the request.

    Returns:
        The job's ref, to pass to :func:`wait_for_job`.

    Raises:
        InvalidRequestError: the request is invalid, or no key outside a flow run;
            nothing was sent.
        KeyReuseError: the key names another request; nothing was sent.
        SubmitUncertainError: an earlier submit under the key may have created the
            job; nothing was sent.
        PollerError: the submit failed; ``may_have_created`` says whether the job
            may exist all the same (the message then names the idempotency key).
    """
    return await submit_once(credentials, request, idempotency_key)


@task(
    name="wait-for-job",
    task_run_name=_wait_run_name,
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_condition_fn=retry_wait_when_transient,
)
async def wait_for_job(
    credentials: JobApiCredentials[ResultT],
    job: JobRef,
    policy: PollPolicy | None = None,
) -> ResultT:
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
    return await observed_wait(credentials, job, policy, logger=get_run_logger())


async def run_job(
    credentials: JobApiCredentials[ResultT],
    request: BaseModel | dict[str, Any],
    *,
    idempotency_key: str | None = None,
    policy: PollPolicy | None = None,
) -> ResultT:
    """Submit a job and wait for its result: :func:`submit_job` then :func:`wait_for_job`.

    Call it inside a flow; it makes two task runs. The request is validated once,
    before anything is submitted.
    """
    parsed = credentials.parse_request(request)
    ref = await submit_job(credentials, parsed, idempotency_key=idempotency_key)
    return await wait_for_job(credentials, ref, policy=policy)
