"""What a batch is made of: its items, and what became of each."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, Generic

from pydantic import BaseModel, ConfigDict, Field

from prefect_pollers.engine import (
    JobCancelledError,
    JobExpiredError,
    JobFailedError,
    PollerError,
    WaitTimeoutError,
)
from prefect_pollers.providers.protocol import ResultT


class BatchItem(BaseModel):
    """One job of a batch.

    Attributes:
        label: How the job is shown in logs, errors and tables (e.g. the company name).
        key: The idempotency key of its submission; unique within the batch.
        request: The provider's request model or a dict of its fields.
        source: Where the item came from, for errors (e.g. ``companies.csv, line 4``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    label: str
    key: str = Field(min_length=1)
    request: Any
    source: str | None = None


class Outcome(str, Enum):
    """What became of a batch's job."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"
    ERROR = "error"
    """Anything else: a request error (bad input, the provider unreachable) or a bug."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of_error(cls, error: PollerError) -> Outcome:
        """The outcome a typed error stands for."""
        for error_type, outcome in _OUTCOME_OF_ERROR:
            if isinstance(error, error_type):
                return outcome
        return cls.ERROR


_OUTCOME_OF_ERROR: tuple[tuple[type[PollerError], Outcome], ...] = (
    (JobFailedError, Outcome.FAILED),
    (JobCancelledError, Outcome.CANCELLED),
    (JobExpiredError, Outcome.EXPIRED),
    (WaitTimeoutError, Outcome.TIMED_OUT),
)


MESSAGE_LIMIT = 500
"""The longest error message an outcome built from an unexpected exception keeps."""


class BatchOutcome(BaseModel, Generic[ResultT]):
    """What became of one job of a batch.

    Attributes:
        label: The item's label.
        key: The item's idempotency key.
        outcome: What became of the job.
        job_id: The remote job id, when the job was submitted.
        result: The provider's result model, on success.
        error: The error's message, otherwise (secrets masked).
        error_type: The error's class name.
    """

    label: str
    key: str
    outcome: Outcome
    job_id: str | None = None
    result: ResultT | None = None
    error: str | None = None
    error_type: str | None = None

    @classmethod
    def succeeded(cls, item: BatchItem, result: ResultT) -> BatchOutcome[ResultT]:
        """The outcome of a job that returned ``result``."""
        return cls(
            label=item.label,
            key=item.key,
            outcome=Outcome.SUCCEEDED,
            job_id=result.job_id,
            result=result,
        )

    @classmethod
    def failed(cls, item: BatchItem, error: PollerError) -> BatchOutcome[ResultT]:
        """The outcome of a job that ended in ``error``."""
        return cls(
            label=item.label,
            key=item.key,
            outcome=Outcome.of_error(error),
            job_id=error.job_id,
            error=str(error),
            error_type=type(error).__name__,
        )

    @classmethod
    def of_exception(
        cls, item: BatchItem, error: Exception, *, secrets: Sequence[str] = ()
    ) -> BatchOutcome[ResultT]:
        """The outcome of an item whose handling raised ``error``, whatever it is.

        A typed :class:`PollerError` gives its own outcome (:meth:`failed`); anything
        else (a ``ValueError`` from a URL template, a ``ValidationError``, a bug) is an
        ``error`` naming the item, its message shortened and ``secrets`` masked.
        """
        if isinstance(error, PollerError):
            return cls.failed(item, error)
        message = str(error) or type(error).__name__
        for secret in secrets:
            message = message.replace(secret, "***")
        if len(message) > MESSAGE_LIMIT:
            message = message[: MESSAGE_LIMIT - 3] + "..."
        return cls(
            label=item.label,
            key=item.key,
            outcome=Outcome.ERROR,
            error=f"item {item.label!r} (key {item.key}): {message}",
            error_type=type(error).__name__,
        )
