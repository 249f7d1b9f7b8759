"""The wait loop on virtual time: schedules, server hints, errors, deadlines."""

import asyncio
import logging

import pytest

from prefect_pollers.engine import (
    AuthenticationError,
    JobCancelledError,
    JobExpiredError,
    JobFailedError,
    JobNotFoundError,
    JobState,
    JobStatus,
    MalformedResponseError,
    PhaseDeadlineError,
    PollPolicy,
    ProviderUnavailableError,
    RateLimitedError,
    ServerHints,
    TransientRequestError,
    VirtualClock,
    WaitTimeoutError,
    Wakeup,
    wait_for_terminal,
)

S = JobState


def st(state, raw=None, retry_after=None, recognized=True, code=None, message=None):
    return JobStatus(
        job_id="job-1",
        state=state,
        raw_status=raw or state.value,
        phase=raw or state.value,
        hints=ServerHints(retry_after=retry_after),
        recognized=recognized,
        error_code=code,
        error_message=message,
    )


class Script:
    """A poll function replaying a script of statuses or errors, recording call times."""

    def __init__(self, clock, items):
        self.clock, self.items, self.times = clock, list(items), []

    async def __call__(self):
        self.times.append(self.clock.time() - START)
        item = self.items.pop(0) if len(self.items) > 1 else self.items[0]
        if isinstance(item, Exception):
            raise item
        return item


START = 1_700_000_000.0


async def run(items, policy, **kw):
    clock = VirtualClock(START)
    script = Script(clock, items)
    result = await wait_for_terminal(
        script, policy, provider="test", job_id="job-1", started_at=START, clock=clock, **kw
    )
    return result, script


async def test_polls_on_schedule_until_success():
    result, script = await run(
        [st(S.RUNNING)] * 3 + [st(S.SUCCEEDED)], PollPolicy(initial_delay=10, interval=5)
    )
    assert result.state is S.SUCCEEDED
    assert script.times == [10, 15, 20, 25]


async def test_backoff_grows_per_phase_and_resets_on_phase_change():
    items = [st(S.RUNNING, "A")] * 3 + [st(S.RUNNING, "B")] * 2 + [st(S.SUCCEEDED)]
    _, script = await run(items, PollPolicy(interval=2, multiplier=2, max_interval=60))
    assert script.times == [0, 2, 6, 14, 16, 20]


async def test_retry_after_from_server_is_honoured():
    items = [st(S.RUNNING, retry_after=30), st(S.RUNNING), st(S.SUCCEEDED)]
    _, script = await run(items, PollPolicy(interval=5))
    assert script.times == [0, 30, 35]


@pytest.mark.parametrize(
    "state, error",
    [
        (S.FAILED, JobFailedError),
        (S.CANCELLED, JobCancelledError),
        (S.EXPIRED, JobExpiredError),
    ],
)
async def test_terminal_outcomes_raise_typed_errors(state, error):
    with pytest.raises(error) as info:
        await run([st(S.RUNNING), st(state, code="E42", message="boom")], PollPolicy(interval=1))
    assert info.value.error_code == "E42" and "boom" in str(info.value)
    assert info.value.status.state is state and "job-1" in str(info.value)


async def test_deadline_is_never_exceeded_and_last_poll_fitted_to_it():
    with pytest.raises(WaitTimeoutError) as info:
        await run([st(S.RUNNING, "SLOW")], PollPolicy(interval=30, max_interval=30, deadline=100))
    _ = info.value
    assert info.value.last_status.phase == "SLOW"
    assert "100 s deadline" in str(info.value) and "SLOW" in str(info.value)


async def test_poll_times_respect_deadline():
    clock = VirtualClock(START)
    script = Script(clock, [st(S.RUNNING)])
    with pytest.raises(WaitTimeoutError):
        await wait_for_terminal(
            script,
            PollPolicy(interval=30, deadline=100),
            provider="t",
            job_id="j",
            started_at=START,
            clock=clock,
        )
    assert script.times == [0, 30, 60, 90, 100]
    assert clock.time() - START == 100


async def test_retry_after_beyond_deadline_is_cut_to_the_deadline():
    _, script = None, None
    clock = VirtualClock(START)
    script = Script(clock, [st(S.RUNNING, retry_after=500)])
    with pytest.raises(WaitTimeoutError):
        await wait_for_terminal(
            script, PollPolicy(deadline=60), provider="t", job_id="j", started_at=START, clock=clock
        )
    assert script.times == [0, 60]


async def test_transient_errors_use_their_own_budget_and_backoff():
    items = [
        TransientRequestError("reset"),
        TransientRequestError("reset"),
        st(S.RUNNING),
        TransientRequestError("502"),
        st(S.SUCCEEDED),
    ]
    _, script = await run(items, PollPolicy(interval=5, error_budget=2, error_backoff=2))
    # errors back off 2 s then 4 s; a success resets the count; the schedule resumes
    assert script.times == [0, 2, 6, 11, 13]


async def test_error_budget_exhausted_raises_provider_unavailable():
    with pytest.raises(ProviderUnavailableError) as info:
        await run([TransientRequestError("down", http_status=503)], PollPolicy(error_budget=3))
    assert "4 request errors in a row" in str(info.value)
    assert info.value.retryable


async def test_malformed_bodies_count_against_the_error_budget():
    items = [MalformedResponseError("not json"), st(S.SUCCEEDED)]
    result, script = await run(items, PollPolicy(error_budget=1, error_backoff=3))
    assert result.state is S.SUCCEEDED and script.times == [0, 3]


async def test_error_retry_after_is_honoured():
    items = [TransientRequestError("503", retry_after=17), st(S.SUCCEEDED)]
    _, script = await run(items, PollPolicy())
    assert script.times == [0, 17]


async def test_rate_limit_waits_retry_after_and_does_not_spend_error_budget():
    items = [RateLimitedError("429", retry_after=20)] * 5 + [st(S.SUCCEEDED)]
    result, script = await run(items, PollPolicy(error_budget=0, deadline=1000))
    assert result.state is S.SUCCEEDED and script.times == [0, 20, 40, 60, 80, 100]


async def test_rate_limit_without_retry_after_uses_policy_default():
    items = [RateLimitedError("429"), st(S.SUCCEEDED)]
    _, script = await run(items, PollPolicy(rate_limit_default=60))
    assert script.times == [0, 60]


async def test_authentication_error_stops_at_once():
    with pytest.raises(AuthenticationError):
        await run([AuthenticationError("401")], PollPolicy())


async def test_first_status_terminal_makes_no_poll():
    clock = VirtualClock(START)
    script = Script(clock, [st(S.RUNNING)])
    result = await wait_for_terminal(
        script, PollPolicy(), provider="t", job_id="j", first_status=st(S.SUCCEEDED), clock=clock
    )
    assert result.state is S.SUCCEEDED and script.times == []


async def test_state_changes_logged_at_info_polls_at_debug_unknown_once(caplog):
    items = (
        [st(S.RUNNING, "A")] * 3
        + [st(S.RUNNING, "WEIRD", recognized=False)] * 3
        + [st(S.SUCCEEDED)]
    )
    changes = []
    with caplog.at_level(logging.DEBUG, logger="prefect_pollers"):
        await run(
            items,
            PollPolicy(interval=1),
            on_change=lambda old, new: changes.append((old and old.phase, new.phase)),
        )
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(info) == 3 and len(debug) == 7
    assert len(warnings) == 1 and "WEIRD" in warnings[0]
    assert changes == [(None, "A"), ("A", "WEIRD"), ("WEIRD", "succeeded")]


async def test_async_on_change_hook_is_awaited():
    seen = []

    async def hook(old, new):
        await asyncio.sleep(0)
        seen.append(new.state)

    await run([st(S.RUNNING), st(S.SUCCEEDED)], PollPolicy(), on_change=hook)
    assert seen == [S.RUNNING, S.SUCCEEDED]


async def test_deadline_counts_from_submission_on_reattach():
    clock = VirtualClock(START + 250)  # the wait resumes 250 s after submission
    script = Script(clock, [st(S.RUNNING)])
    with pytest.raises(WaitTimeoutError):
        await wait_for_terminal(
            script,
            PollPolicy(interval=20, deadline=300),
            provider="t",
            job_id="j",
            started_at=START,
            clock=clock,
        )
    assert [t - 250 for t in script.times] == [0, 20, 40, 50]


async def test_many_concurrent_waits_interleave_on_virtual_time():
    clock = VirtualClock(START)

    async def one(duration):
        polls = []

        async def poll():
            polls.append(clock.time() - START)
            done = clock.time() - START >= duration
            return st(S.SUCCEEDED if done else S.RUNNING)

        await wait_for_terminal(
            poll, PollPolicy(interval=5), provider="t", job_id="j", started_at=START, clock=clock
        )
        return polls

    results = await asyncio.gather(*(one(d) for d in (12, 3, 30)))
    assert results[0] == [0, 5, 10, 15] and results[1] == [0, 5]
    assert results[2][-1] == 30 and clock.time() - START == 30


async def test_phase_quiet_periods_skip_to_each_phase_earliest_end():
    # phase A lasts >= 60 s from submission, B >= 100 s from its start
    timeline = [(0, "A"), (70, "B"), (190, "C"), (200, "done")]

    clock = VirtualClock(START)

    async def poll():
        now = clock.time() - START
        phase = [p for t, p in timeline if t <= now][-1]
        polls.append((now, phase))
        return st(S.SUCCEEDED) if phase == "done" else st(S.RUNNING, phase)

    polls = []
    policy = PollPolicy(
        initial_delay=60, interval=10, phase_quiet_periods={"A": 60, "B": 100, "C": 5}
    )
    await wait_for_terminal(poll, policy, provider="t", job_id="j", started_at=START, clock=clock)
    # A seen at 60 and 70 ... B first seen at 70, earliest start 60 -> next poll at 160
    assert [t for t, _ in polls] == [60, 70, 160, 170, 180, 190, 200]


# -- callbacks: a wake-up ends a pause; the safety cadence paces the rest --------------


async def wait_with_callback(items, policy, callback_at=None, trusted=None):
    """Wait on virtual time while a 'callback' wakes the wait at ``callback_at`` s."""
    clock = VirtualClock(START)
    script = Script(clock, items)

    async def main():
        wakeup = Wakeup()

        async def callback():
            await clock.sleep(callback_at)
            wakeup.set(trusted)

        sender = asyncio.ensure_future(callback()) if callback_at is not None else None
        try:
            return await wait_for_terminal(
                script,
                policy,
                provider="p",
                job_id="job-1",
                started_at=START,
                clock=clock,
                wakeup=wakeup,
            )
        finally:
            if sender is not None:
                sender.cancel()

    return await main(), script.times


CALLBACK_POLICY = PollPolicy(initial_delay=5, interval=3, callback_safety_interval=60, deadline=600)


async def test_a_callback_ends_the_wait_with_one_confirming_poll():
    status, times = await wait_with_callback([st(S.SUCCEEDED)], CALLBACK_POLICY, callback_at=12.5)
    assert status.state is S.SUCCEEDED
    assert times == [12.5]  # no poll before the callback, one right after it


async def test_without_a_callback_the_wait_polls_at_the_safety_cadence():
    running = st(S.RUNNING)
    status, times = await wait_with_callback(
        [running, running, st(S.SUCCEEDED)], CALLBACK_POLICY, callback_at=None
    )
    assert status.state is S.SUCCEEDED
    assert times == [60, 120, 180]


async def test_an_unconfirmed_callback_falls_back_to_the_policy_schedule_once():
    running = st(S.RUNNING)
    status, times = await wait_with_callback(
        [running, st(S.SUCCEEDED)], CALLBACK_POLICY, callback_at=10
    )
    assert status.state is S.SUCCEEDED
    assert times == [10, 13]  # the status lagged the callback: next poll at the interval


async def test_a_trusted_terminal_status_ends_the_wait_without_a_poll():
    trusted = st(S.SUCCEEDED, raw="DONE")
    status, times = await wait_with_callback(
        [st(S.RUNNING)], CALLBACK_POLICY, callback_at=7, trusted=trusted
    )
    assert status == trusted and times == []
    with pytest.raises(JobFailedError, match="E"):
        await wait_with_callback(
            [st(S.RUNNING)], CALLBACK_POLICY, callback_at=7, trusted=st(S.FAILED, code="E")
        )


async def test_the_deadline_holds_with_callbacks_on():
    policy = CALLBACK_POLICY.with_(deadline=100)
    with pytest.raises(WaitTimeoutError):
        await wait_with_callback([st(S.RUNNING)], policy, callback_at=None)


# -- jobs not visible yet, and jobs stuck in a phase ------------------------------------


def not_found():
    return JobNotFoundError("status endpoint answered 404", provider="p", job_id="job-1")


async def test_a_404_soon_after_submission_is_retried_until_the_job_is_visible():
    policy = PollPolicy(interval=5, min_interval=1, not_found_grace=5)
    result, script = await run([not_found(), not_found(), st(S.SUCCEEDED)], policy)
    assert result.state is S.SUCCEEDED
    assert script.times == [0, 1, 2]


async def test_a_404_after_the_grace_period_is_job_not_found():
    policy = PollPolicy(interval=5, min_interval=1, not_found_grace=2.5)
    with pytest.raises(JobNotFoundError):
        await run([not_found()], policy)
    with pytest.raises(JobNotFoundError):  # a job seen before, then unknown: no grace left
        await run([st(S.RUNNING), not_found()], PollPolicy(initial_delay=10, interval=5))


async def test_a_job_stuck_in_a_phase_ends_the_wait_with_the_phase_named():
    policy = PollPolicy(interval=30, phase_deadlines={"QUEUED": 70}, deadline=600)
    queued = st(S.PENDING, "QUEUED")
    with pytest.raises(PhaseDeadlineError, match="QUEUED") as info:
        await run([queued], policy)
    assert info.value.phase == "QUEUED" and info.value.limit == 70
    assert info.value.last_status == queued
    assert not info.value.retryable
    # polls at 0, 30, 60, then at the phase deadline (70), not at 90
    _, script = await run(
        [queued, queued, queued, st(S.RUNNING, "WORKING"), st(S.SUCCEEDED)], policy
    )
    assert script.times == [0, 30, 60, 70, 100]


async def test_a_phase_deadline_counts_from_when_the_phase_was_first_seen():
    policy = PollPolicy(interval=30, phase_deadlines={"WORKING": 50}, deadline=600)
    working = st(S.RUNNING, "WORKING")
    items = [st(S.PENDING, "QUEUED"), st(S.PENDING, "QUEUED"), working, working, working]
    with pytest.raises(PhaseDeadlineError) as info:
        await run(items, policy)
    assert "WORKING" in str(info.value)
