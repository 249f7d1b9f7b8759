"""The base of provider-batch blocks: a job that carries many requests.

A provider-batch block is a credentials block like any other: its contract says how
to poll, cancel and rate-limit the batch as one job. It adds the batch's declaration
(:class:`~prefect_pollers.providers.batch_spec.ProviderBatchSpec`), limits a user may
lower, and how one request's result line becomes a typed result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import Field, model_validator

from prefect_pollers.engine import JobRef, PollPolicy
from prefect_pollers.providers.batch_spec import ProviderBatchSpec
from prefect_pollers.providers.callbacks import CallbackCredentials
from prefect_pollers.providers.protocol import JobResult


def provider_batch_policy() -> PollPolicy:
    """A pace for jobs of up to a day: 10 s at first, growing to 5 min, 25 h at most.

    With callbacks (OpenAI's project webhooks), a poll every 5 min at most as a safety net.

    Most batches end within the hour; the window is 24 h, and a cancelled batch may
    take 10 minutes more to settle.
    """
    return PollPolicy(
        initial_delay=10.0,
        interval=10.0,
        multiplier=1.5,
        max_interval=300.0,
        deadline=25 * 3600.0,
        error_budget=10,
        callback_safety_interval=300.0,
    )


class ProviderBatchJob(JobResult):
    """A provider batch's own final status (its requests' results are read apart).

    Attributes:
        job_id: The provider batch id.
        payload: The final status response.
    """

    payload: dict[str, Any] = Field(default_factory=dict)


class RequestResult(JobResult):
    """The base of one request's typed result.

    Attributes:
        job_id: The provider batch that carried it.
        custom_id: The request's ``custom_id`` (its item's key).
    """

    custom_id: str


class ProviderBatchCredentials(CallbackCredentials[ProviderBatchJob], ABC):
    """A block for an API that runs many requests as one remote job.

    Attributes:
        max_requests_per_batch: Requests in one provider batch at most; lowers the
            API's documented limit (None: the API's).
        max_bytes_per_batch: Input bytes of one provider batch at most; lowers the
            API's documented limit (None: the API's).
        result_model: The typed result of one succeeded request.
    """

    result_model: ClassVar[type[RequestResult]]

    max_requests_per_batch: int | None = Field(
        default=None, ge=1, description="Requests per provider batch; empty: the API's limit."
    )
    max_bytes_per_batch: int | None = Field(
        default=None, ge=1, description="Input bytes per provider batch; empty: the API's limit."
    )

    @model_validator(mode="after")
    def _within_the_api_limits(self) -> ProviderBatchCredentials:
        spec = self.api_batch_spec()
        for name, value, limit in (
            ("max_requests_per_batch", self.max_requests_per_batch, spec.max_requests),
            ("max_bytes_per_batch", self.max_bytes_per_batch, spec.max_bytes),
        ):
            if value is not None and value > limit:
                raise ValueError(f"{name} may lower the API's limit ({limit}), not raise it")
        if self.trust_signed_callbacks:
            raise ValueError(
                "trust_signed_callbacks: a provider batch's results are read from its final "
                "status, so a callback only wakes its wait (leave it off)"
            )
        return self

    @abstractmethod
    def api_batch_spec(self) -> ProviderBatchSpec:
        """The API's documented declaration, before this block's limits."""

    @property
    @abstractmethod
    def batch_endpoint(self) -> str:
        """The endpoint every request of a batch goes to (named in request lines)."""

    @abstractmethod
    def request_result(self, batch_id: str, custom_id: str, raw: Any) -> RequestResult:
        """One succeeded request's typed result, from what ``line_result`` selects.

        Raises:
            ValueError: when ``raw`` is not what the API documents.
        """

    def batch_spec(self) -> ProviderBatchSpec:
        """The declaration with this block's limits applied."""
        spec = self.api_batch_spec()
        return spec.model_copy(
            update={
                "max_requests": self.max_requests_per_batch or spec.max_requests,
                "max_bytes": self.max_bytes_per_batch or spec.max_bytes,
            }
        )

    def build_result(self, ref: JobRef, body: dict[str, Any]) -> ProviderBatchJob:
        """The batch's final status."""
        return ProviderBatchJob(job_id=ref.job_id, payload=body)
