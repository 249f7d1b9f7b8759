"""The wait loop: the one implementation every provider and task uses."""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from prefect_pollers.engine.clock import Clock, current_clock
from prefect_pollers.engine.errors import (
    JobCancelledError,
    JobEndedError,
    JobExpiredError,
    JobFailedError,
    JobNotFoundError,
    MalformedResponseError,
    PhaseDeadlineError,
    ProviderUnavailableError,
    RateLimitedError,
    TransientRequestError,
    WaitTimeoutError,
)
from prefect_pollers.engine.models import JobState, JobStatus
from prefect_pollers.engine.policy import PollPolicy, error_delay, next_delay
from prefect_pollers.engine.wakeup import Wakeup

StateChangeHook = Callable[[JobStatus | None, JobStatus], Awaitable[None] | None]
StatusHook = Callable[[JobStatus], Awaitable[None] | None]
"""Called with every status a wait sees."""

_OUTCOMES: dict[JobState, tuple[type[JobEndedError], str]] = {
    JobState.FAILED: (JobFailedError, "failed"),
    JobState.CANCELLED: (JobCancelledError, "was cancelled"),
    JobState.EXPIRED: (JobExpiredError, "expired"),
}

_default_logger = logging.getLogger("prefect_pollers")


def raise_for_outcome(status: JobStatus, *, provider: str) -> JobStatus:
    """Return a succeeded status; raise the typed error of any other terminal one."""
    if status.state in _OUTCOMES:
        error_type, verb = _OUTCOMES[status.state]
        detail = " ".join(
            part
            for part in (
                f"[{status.error_code}]" if status.error_code else "",
                status.error_message or "",
            )
            if part
        )
        message = f"job {verb} (provider status {status.raw_status!r})"
        raise error_type(
            f"{message}: {detail}" if detail else message,
            status=status,
            provider=provider,
            job_id=status.job_id,
        )
    return status


def _changed(old: JobStatus | None, new: JobStatus) -> bool:
    return old is None or (old.state, old.phase, old.raw_status) != (
        new.state,
        new.phase,
        new.raw_status,
    )


async def wait_for_terminal(
    poll: Callable[[], Awaitable[JobStatus]],
    policy: PollPolicy,
    *,
    provider: str,
    job_id: str,
    started_at: float | None = None,
    first_status: JobStatus | None = None,
    clock: Clock | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    on_change: StateChangeHook | None = None,
    rng: random.Random | None = None,
    wakeup: Wakeup | None = None,
    on_status: StatusHook | None = None,
) -> JobStatus:
    """Poll until the job is terminal or the deadline passes.

    With a ``wakeup`` (callbacks on), polls are never closer than the policy's
    ``callback_safety_interval`` (the first one included), and a wake-up polls at
    once (no sooner than ``min_interval`` after the last poll) to confirm the
    callback: the status endpoint stays the truth. A wake-up carrying a trusted
    terminal status ends the wait without a poll. When the confirming poll finds
    the job still running, the next poll follows the policy's own schedule.

    Args:
        poll: Makes one status request and returns the normalized status. It raises
            ``TransientRequestError`` (incl. 429) or ``MalformedResponseError`` for
            errors worth retrying; any other error ends the wait at once.
        policy: The poll schedule, deadline and error budget.
        provider: Provider name, for logs and errors.
        job_id: The job's id, for logs and errors.
        started_at: Epoch seconds the deadline and initial delay count from
            (the submission time); default now.
        first_status: A status already known (e.g. from the submit response).
        clock: Time source; default :func:`current_clock`.
        logger: Where state changes (INFO), polls (DEBUG) and retries (WARNING) go.
        on_change: Called with (old, new) on every change of state or phase.
        rng: Jitter source.
        wakeup: Ends a pause early when a callback says the job ended.
        on_status: Called with every status seen, changed or not (e.g. to follow a
            provider batch's request counts).

    Returns:
        The terminal status, when the job succeeded.

    Raises:
        JobFailedError, JobCancelledError, JobExpiredError: the job ended otherwise.
        WaitTimeoutError: the deadline passed first (carries the last status).
        PhaseDeadlineError: the job stayed in one phase past its ``phase_deadlines``.
        ProviderUnavailableError: more request errors in a row than the budget.
        AuthenticationError, BadRequestError: at once, unretried.
        JobNotFoundError: a 404 after the policy's ``not_found_grace``.
    """
    clock = clock or current_clock()
    log = logger or _default_logger
    start = clock.time() if started_at is None else started_at
    deadline_at = None if policy.deadline is None else start + policy.deadline
    label = f"{provider} job {job_id}"
    warned: set[str] = set()
    last: JobStatus | None = None
    polls = phase_polls = errors = 0
    last_poll_at = phase_started_at = phase_seen_at = start

    async def observe(status: JobStatus) -> None:
        nonlocal last, phase_polls, phase_started_at, phase_seen_at
        if not status.recognized and str(status.raw_status) not in warned:
            warned.add(str(status.raw_status))
            log.warning("%s: unknown status %r, treated as running", label, status.raw_status)
        if _changed(last, status):
            log.info("%s: %s%s", label, f"{last.describe()} -> " if last else "", status.describe())
            if on_change is not None:
                outcome = on_change(last, status)
                if inspect.isawaitable(outcome):
                    await outcome
            phase_polls = 0
            if last is None or last.phase != status.phase:
                phase_started_at = last_poll_at
                phase_seen_at = clock.time()
        if on_status is not None:
            seen = on_status(status)
            if inspect.isawaitable(seen):
                await seen
        last = status

    def time_left() -> float | None:
        return None if deadline_at is None else deadline_at - clock.time()

    def timeout() -> WaitTimeoutError:
        seen = f"; last status {last.describe()}" if last else "; no poll succeeded"
        return WaitTimeoutError(
            f"job not finished within the {policy.deadline:g} s deadline after {polls} polls{seen}",
            last_status=last,
            provider=provider,
            job_id=job_id,
        )

    if first_status is not None:
        await observe(first_status)
        if first_status.state.terminal:
            return raise_for_outcome(first_status, provider=provider)

    def paced(delay: float, woken: bool) -> float:
        # With callbacks on, the policy's schedule is only the floor of a slow safety
        # cadence, except right after a callback the status did not confirm yet.
        if wakeup is None or woken:
            return delay
        return max(delay, policy.callback_safety_interval)

    delay = max(0.0, start + paced(policy.initial_delay, False) - clock.time())
    while True:
        left = time_left()
        if left is not None:
            if left <= 0 and polls:
                raise timeout()
            delay = min(delay, max(0.0, left))
        woken = False
        if wakeup is None:
            if delay > 0:
                await clock.sleep(delay)
        elif await wakeup.pause(clock, delay):
            woken = True
            trusted = wakeup.take()
            if trusted is not None and trusted.state.terminal:
                log.info("%s: a signed callback reported %s", label, trusted.describe())
                await observe(trusted)
                return raise_for_outcome(trusted, provider=provider)
            log.info("%s: woken by a callback, confirming with a status call", label)
            gap = last_poll_at + policy.min_interval - clock.time() if polls else 0.0
            if gap > 0:
                await clock.sleep(gap)
        poll_at = clock.time()
        try:
            status = await poll()
        except JobNotFoundError as exc:
            # Eventually consistent APIs answer 404 for a moment after creating a job.
            visible_in = start + policy.not_found_grace - clock.time()
            if visible_in <= 0:
                raise
            delay = policy.min_interval or policy.interval / 10
            if exc.hints is not None and exc.hints.retry_after is not None:
                delay = max(delay, exc.hints.retry_after)
            log.warning(
                "%s: not visible yet (HTTP 404 within %.3g s of submission), retrying in %.3g s",
                label,
                policy.not_found_grace,
                delay,
            )
            continue
        except (TransientRequestError, MalformedResponseError) as exc:
            if isinstance(exc, RateLimitedError):
                delay = max(
                    exc.retry_after if exc.retry_after is not None else policy.rate_limit_default,
                    policy.min_interval,
                )
                log.warning("%s: rate limited (HTTP 429), next poll in %.3g s", label, delay)
            else:
                errors += 1
                if errors > policy.error_budget:
                    raise ProviderUnavailableError(
                        f"{errors} request errors in a row (error budget {policy.error_budget}); "
                        f"last: {exc.message}",
                        provider=provider,
                        job_id=job_id,
                        path=exc.path,
                        http_status=exc.http_status,
                    ) from exc
                delay = error_delay(policy, errors, getattr(exc, "retry_after", None))
                log.warning(
                    "%s: %s (error %d of %d), retrying in %.3g s",
                    label,
                    exc.message,
                    errors,
                    policy.error_budget,
                    delay,
                )
            left = time_left()
            if left is not None and left <= 0:
                raise timeout() from exc
            continue
        errors = 0
        polls += 1
        log.debug("%s: poll %d -> %s", label, polls, status.describe())
        await observe(status)
        last_poll_at = poll_at
        phase_polls += 1
        if status.state.terminal:
            return raise_for_outcome(status, provider=provider)
        left = time_left()
        if left is not None and left <= 0:
            raise timeout()
        delay = paced(
            next_delay(
                policy,
                phase_polls,
                status,
                time_left=left,
                phase_elapsed=clock.time() - phase_started_at,
                rng=rng,
            ),
            woken,
        )
        phase_limit = policy.phase_deadlines.get(status.phase) if status.phase else None
        if phase_limit is not None:
            in_phase = clock.time() - phase_seen_at
            if in_phase >= phase_limit:
                raise PhaseDeadlineError(
                    f"job still {status.describe()} {in_phase:.3g} s after it was first seen "
                    f"in phase {status.phase!r} (phase deadline {phase_limit:g} s)",
                    phase=str(status.phase),
                    limit=phase_limit,
                    last_status=status,
                    provider=provider,
                    job_id=job_id,
                )
            delay = min(delay, max(phase_limit - in_phase, policy.min_interval))
