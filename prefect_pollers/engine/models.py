"""The engine's value objects: normalized job states, statuses, server hints, job refs."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobState(str, Enum):
    """The normalized state of a remote job, whatever the provider calls it."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    def __str__(self) -> str:
        return self.value

    @property
    def terminal(self) -> bool:
        """Whether the job can no longer change state."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED})


class ServerHints(BaseModel):
    """What a response said about when to call again.

    Attributes:
        retry_after: Seconds to wait before the next call (``Retry-After``), if sent.
        ratelimit_limit: Requests allowed per window (``X-RateLimit-Limit``).
        ratelimit_remaining: Requests left in the window (``X-RateLimit-Remaining``).
        ratelimit_reset: Epoch seconds when the window resets (``X-RateLimit-Reset``).
    """

    model_config = ConfigDict(frozen=True)

    retry_after: float | None = None
    ratelimit_limit: int | None = None
    ratelimit_remaining: int | None = None
    ratelimit_reset: float | None = None


class JobStatus(BaseModel):
    """One normalized view of a provider's status response.

    Attributes:
        job_id: The remote job id.
        state: The normalized state.
        raw_status: The provider's own status string.
        phase: The provider's phase, where it has phases distinct from the status
            (by default the raw status, so per-phase intervals key on it).
        error_code: The provider's error code, on failure.
        error_message: The provider's error message, on failure.
        payload: The whole JSON body of the status response.
        hints: Retry-After and rate-limit headers of the response.
        recognized: False when the raw status is not one the provider documents
            (it then counts as running).
    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    state: JobState
    raw_status: str | None = None
    phase: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    hints: ServerHints = Field(default_factory=ServerHints)
    recognized: bool = True

    def describe(self) -> str:
        """A short human description, e.g. ``running (PROCESSING_SIMULATION)``."""
        raw = self.phase or self.raw_status
        return (
            f"{self.state.value} ({raw})" if raw and raw != self.state.value else self.state.value
        )


class CallbackBinding(BaseModel):
    """What ties a job to the callback that will end its wait.

    Attributes:
        flow_run: The flow-run segment of the callback URL (the submitting flow
            run's id, or ``-``): callback events are related to that flow run.
        nonce: The nonce its capability-URL token binds (not a secret: the token
            is its HMAC under the block's webhook secret); None for a signed scheme.
    """

    model_config = ConfigDict(frozen=True)

    flow_run: str
    nonce: str | None = None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobRef(BaseModel):
    """The handle ``submit`` returns: enough for any later process to resume the wait.

    Plain and serializable: it is the continuation token a retried or resumed flow
    re-attaches with.

    Attributes:
        provider: The provider's short name.
        job_id: The remote job id.
        submitted_at: When the job was submitted (UTC); deadlines count from here.
        idempotency_key: The key the submit was made under, if any.
        context: What a later poll needs besides the id (e.g. APIXO's model).
        submitted_status: The status the submit response already carried, when the
            job was terminal at once (e.g. an Exona cache hit): the wait then makes
            no poll at all.
        callback: Set when the job was submitted with a callback URL that ends
            its wait (the wait then polls only at the policy's safety cadence).
    """

    model_config = ConfigDict(frozen=True)

    provider: str
    job_id: str
    submitted_at: datetime = Field(default_factory=_utcnow)
    idempotency_key: str | None = None
    context: dict[str, str] = Field(default_factory=dict)
    submitted_status: JobStatus | None = None
    callback: CallbackBinding | None = None
