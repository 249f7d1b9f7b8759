"""Prefect's job interface: a saved job that triggers runs, waited on with our engine.

:class:`PollerJob` is a ``prefect.blocks.abstract.JobBlock``: a provider's
credentials block, a request and an optional poll policy, saved together.
:meth:`PollerJob.trigger` submits through the ledger as :func:`~prefect_pollers.submit_job`
does, and returns a :class:`PollerJobRun` (a ``JobRun``) whose
:meth:`~PollerJobRun.wait_for_completion` and :meth:`~PollerJobRun.fetch_result`
wait the way :func:`~prefect_pollers.wait_for_job` does: same policy, events,
callbacks and typed errors. Code written against Prefect's interfaces works unchanged::

    job = await PollerJob.aload("nightly-scan")
    run = await job.trigger()
    await run.wait_for_completion()
    result = await run.fetch_result()
"""

from __future__ import annotations

from typing import Any, TypeAlias

from prefect.blocks.abstract import JobBlock, JobRun
from pydantic import Field, model_validator

from prefect_pollers.engine import JobRef, PollPolicy
from prefect_pollers.providers import (
    ApixoCredentials,
    ExonaCredentials,
    HttpJobApi,
    JobApiCredentials,
    JobResult,
    ModelRouteCredentials,
    TwynCredentials,
)
from prefect_pollers.tasks.observed import observed_wait
from prefect_pollers.tasks.submit_wait import submit_once

ProviderCredentials: TypeAlias = (
    ExonaCredentials | TwynCredentials | ApixoCredentials | ModelRouteCredentials | HttpJobApi
)
"""The credentials blocks a :class:`PollerJob` takes: one per provider of the registry."""


class PollerJob(JobBlock[JobResult]):
    """A job of any provider, saved as a block: trigger it, then wait for its result.

    Attributes:
        credentials: The provider's credentials block (which provider this job is for).
        request: The provider's request fields, checked against its request model
            when the block is built.
        idempotency_key: Names the submission. Leave it empty inside flows: each
            flow run then submits once (a retried run re-attaches to its job). A
            fixed key creates one job ever: every later trigger re-attaches to it.
            Required outside a flow run.
        policy: The poll schedule; the provider's preset if empty.
    """

    _block_type_name = "Poller Job"
    _description = (
        "A remote job of any prefect-pollers provider (credentials, request, poll policy): "
        "trigger it and wait for its typed result."
    )

    credentials: ProviderCredentials = Field(description="The provider's credentials block.")
    request: dict[str, Any] = Field(description="The provider's request fields.")
    idempotency_key: str | None = Field(
        default=None,
        description="Names the submission; empty inside flows (one job per flow run).",
    )
    policy: PollPolicy | None = Field(
        default=None, description="The poll schedule; the provider's preset if empty."
    )

    @model_validator(mode="after")
    def _request_is_valid(self) -> PollerJob:
        self.credentials.parse_request(self.request, where="of this PollerJob")
        return self

    async def trigger(self) -> PollerJobRun:
        """Submit the job once per idempotency key and return its run.

        Raises:
            InvalidRequestError: no key outside a flow run; nothing was sent.
            KeyReuseError: the key names another request; nothing was sent.
            SubmitUncertainError: an earlier submit under the key may have created
                the job; nothing was sent.
            PollerError: the submit failed (``may_have_created`` says whether the
                job may exist all the same).
        """
        ref = await submit_once(self.credentials, self.request, self.idempotency_key)
        self.logger.info("Triggered %s job %s", ref.provider, ref.job_id)
        return PollerJobRun(self, ref)


class PollerJobRun(JobRun[JobResult]):
    """A submitted job of a :class:`PollerJob`; build one from a saved ref to re-attach.

    Args:
        job: The job block it was triggered from.
        ref: The submitted job.
    """

    def __init__(self, job: PollerJob, ref: JobRef) -> None:
        self.job = job
        self.ref = ref
        self._result: JobResult | None = None

    def __repr__(self) -> str:
        return f"PollerJobRun(provider={self.ref.provider!r}, job_id={self.ref.job_id!r})"

    async def wait_for_completion(self) -> None:  # type: ignore[override]
        """Wait for the job to end: its result on success, its typed error otherwise.

        Prefect annotates this method as returning a logger; implementations
        (prefect-dbt's) return nothing, as this one does.

        Raises:
            JobFailedError, JobCancelledError, JobExpiredError: the job ended otherwise.
            WaitTimeoutError: the policy's deadline passed first.
            ProviderUnavailableError: the provider stayed unreachable.
        """
        await self._wait()

    async def fetch_result(self) -> JobResult:
        """The provider's typed result (e.g. ``ExonaScanResult``), waiting first if need be.

        Raises:
            PollerError: as :meth:`wait_for_completion` does.
        """
        return await self._wait()

    async def _wait(self) -> JobResult:
        if self._result is None:
            credentials: JobApiCredentials[Any] = self.job.credentials
            self._result = await observed_wait(
                credentials, self.ref, self.job.policy, logger=self.logger
            )
        return self._result
