"""Poll policies: when to poll next, as data.

A :class:`PollPolicy` says how long to wait before the first poll and between
polls, how that grows, which phases poll at their own pace, how long the whole wait
may take and how many request errors in a row it tolerates. :func:`next_delay` is
the one function that turns (policy, attempt, last status, server hints, time
left) into the next pause.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_pollers.engine.models import JobStatus


class PollPolicy(BaseModel):
    """How a wait paces its polls.

    The delay before poll ``n`` (``n`` = 1 after the first poll) is
    ``interval * multiplier ** (n - 1)`` capped at ``max_interval``; a phase listed
    in ``phase_intervals`` uses its own interval instead (restarting the growth when
    the phase changes). Jitter spreads the delay by up to ``± jitter`` of itself.
    The server's ``Retry-After`` is a floor, never undercut; the result is never
    under ``min_interval`` and never runs past the deadline (the last poll is fitted
    to it).

    Attributes:
        initial_delay: Seconds before the first poll.
        interval: Base seconds between polls.
        multiplier: Growth of the interval after each poll in the same phase (1 = fixed).
        max_interval: Cap on any interval the policy computes.
        jitter: Fraction (0-1) by which a delay is randomly spread.
        phase_intervals: Interval per provider phase (raw phase name -> seconds).
        phase_quiet_periods: Per phase, how long after the phase's earliest possible
            start nothing worth seeing can happen (e.g. its minimum duration, or the
            minimum durations of it and the phases after it): the next poll waits that
            long, counted from the last poll before the phase was seen (or from
            submission).
        deadline: Seconds from submission after which the wait gives up (None = never).
        min_interval: Floor of every delay; 1 s by default, as every provider asks.
        error_budget: Consecutive request errors tolerated before giving up.
        error_backoff: Seconds to pause after the first request error in a row.
        error_backoff_multiplier: Growth of that pause per further error (2 s, 4 s, ...).
        max_error_backoff: Cap of the error backoff.
        rate_limit_default: Seconds to wait after a 429 that gives no Retry-After.
        honour_retry_after: Whether ``Retry-After`` on a status response is a floor.
        not_found_grace: Seconds after submission during which a 404 from the status
            endpoint means "not visible yet" (APIs that are eventually consistent
            answer 404 for a moment after creating a job) and is retried; after it,
            a 404 ends the wait with ``JobNotFoundError``.
        phase_deadlines: Per phase (raw phase name), the most seconds a job may stay
            in it, counted from the poll that first saw it there: past that the
            wait ends with ``PhaseDeadlineError`` (e.g. queued too long), before the
            overall deadline.
        callback_safety_interval: With callbacks on (a callback wakes the wait), the
            least pause before the first poll and between polls: a slow safety net,
            so a lost callback costs at most about this much latency, never the job.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_delay: float = Field(0.0, ge=0)
    interval: float = Field(5.0, gt=0)
    multiplier: float = Field(1.0, ge=1)
    max_interval: float = Field(60.0, gt=0)
    jitter: float = Field(0.0, ge=0, le=1)
    phase_intervals: dict[str, float] = Field(default_factory=dict)
    phase_quiet_periods: dict[str, float] = Field(default_factory=dict)
    deadline: float | None = Field(600.0, gt=0)
    min_interval: float = Field(1.0, ge=0)
    error_budget: int = Field(3, ge=0)
    error_backoff: float = Field(2.0, gt=0)
    error_backoff_multiplier: float = Field(2.0, ge=1)
    max_error_backoff: float = Field(60.0, gt=0)
    rate_limit_default: float = Field(60.0, ge=0)
    honour_retry_after: bool = True
    not_found_grace: float = Field(5.0, ge=0)
    phase_deadlines: dict[str, float] = Field(default_factory=dict)
    callback_safety_interval: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> PollPolicy:
        bad = {k: v for k, v in self.phase_intervals.items() if v <= 0}
        if bad:
            raise ValueError(f"phase_intervals must be positive seconds, got {bad}")
        bad = {k: v for k, v in self.phase_deadlines.items() if v <= 0}
        if bad:
            raise ValueError(f"phase_deadlines must be positive seconds, got {bad}")
        bad = {k: v for k, v in self.phase_quiet_periods.items() if v < 0}
        if bad:
            raise ValueError(f"phase_quiet_periods must be non-negative seconds, got {bad}")
        if self.max_interval < self.interval:
            raise ValueError(
                f"max_interval ({self.max_interval}) is below interval ({self.interval})"
            )
        if self.deadline is not None and self.deadline <= self.initial_delay:
            raise ValueError(
                f"deadline ({self.deadline} s) must be after the first poll "
                f"(initial_delay {self.initial_delay} s)"
            )
        return self

    def scaled(self, factor: float) -> PollPolicy:
        """The same policy with every duration multiplied by ``factor``.

        Used to run real schedules against the simulator's scaled time, e.g.
        ``policy.scaled(0.01)`` for a simulator started with ``--time-scale 0.01``.
        """
        if factor <= 0:
            raise ValueError(f"scale factor must be positive, got {factor}")
        return self.model_copy(
            update={
                "initial_delay": self.initial_delay * factor,
                "interval": self.interval * factor,
                "max_interval": self.max_interval * factor,
                "phase_intervals": {k: v * factor for k, v in self.phase_intervals.items()},
                "phase_quiet_periods": {k: v * factor for k, v in self.phase_quiet_periods.items()},
                "deadline": None if self.deadline is None else self.deadline * factor,
                "min_interval": self.min_interval * factor,
                "error_backoff": self.error_backoff * factor,
                "max_error_backoff": self.max_error_backoff * factor,
                "rate_limit_default": self.rate_limit_default * factor,
                "callback_safety_interval": self.callback_safety_interval * factor,
                "not_found_grace": self.not_found_grace * factor,
                "phase_deadlines": {k: v * factor for k, v in self.phase_deadlines.items()},
            }
        )

    def with_(self, **changes: object) -> PollPolicy:
        """A validated copy with some fields changed, e.g. ``policy.with_(deadline=60)``."""
        return PollPolicy.model_validate({**self.model_dump(), **changes})


def next_delay(
    policy: PollPolicy,
    attempt: int,
    status: JobStatus | None,
    *,
    time_left: float | None,
    phase_elapsed: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to pause before the next poll.

    Args:
        policy: The poll policy.
        attempt: Polls made so far in the current phase (1 after the first).
        status: The last status seen (its phase and server hints count).
        time_left: Seconds until the deadline, or None for no deadline.
        phase_elapsed: Seconds since the current phase began at the earliest.
        rng: Source of jitter (seeded in tests and benchmarks).

    Returns:
        The delay, never under ``min_interval`` nor past ``time_left``.
    """
    phase = status.phase if status is not None else None
    base = policy.phase_intervals.get(phase, policy.interval) if phase else policy.interval
    delay = min(base * policy.multiplier ** max(0, attempt - 1), max(policy.max_interval, base))
    if policy.jitter:
        delay *= 1 + (rng or random).uniform(-policy.jitter, policy.jitter)
    if phase and phase_elapsed is not None and phase in policy.phase_quiet_periods:
        delay = max(delay, policy.phase_quiet_periods[phase] - phase_elapsed)
    if policy.honour_retry_after and status is not None and status.hints.retry_after is not None:
        delay = max(delay, status.hints.retry_after)
    delay = max(delay, policy.min_interval)
    if time_left is not None:
        delay = min(delay, max(0.0, time_left))
    return delay


def error_delay(policy: PollPolicy, consecutive_errors: int, retry_after: float | None) -> float:
    """Seconds to pause after the ``consecutive_errors``-th request error in a row.

    ``Retry-After`` from the failed response wins when the server sent one.
    """
    if retry_after is not None:
        return max(retry_after, policy.min_interval)
    backoff = policy.error_backoff * policy.error_backoff_multiplier ** (consecutive_errors - 1)
    return max(min(backoff, policy.max_error_backoff), policy.min_interval)
