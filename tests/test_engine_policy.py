"""PollPolicy validation and the next-delay function."""

import random

import pytest
from pydantic import ValidationError

from prefect_pollers.engine import JobState, JobStatus, PollPolicy, ServerHints, next_delay
from prefect_pollers.engine.policy import error_delay


def status(phase=None, retry_after=None):
    return JobStatus(
        job_id="j",
        state=JobState.RUNNING,
        raw_status=phase,
        phase=phase,
        hints=ServerHints(retry_after=retry_after),
    )


def test_fixed_interval_is_constant():
    policy = PollPolicy(interval=5)
    assert [next_delay(policy, n, status(), time_left=None) for n in (1, 2, 10)] == [5, 5, 5]


def test_exponential_growth_is_capped():
    policy = PollPolicy(interval=2, multiplier=1.5, max_interval=30)
    delays = [next_delay(policy, n, status(), time_left=None) for n in range(1, 12)]
    assert delays[:4] == [2, 3, 4.5, 6.75]
    assert max(delays) == 30 and delays[-1] == 30


def test_phase_interval_overrides_base():
    policy = PollPolicy(interval=5, phase_intervals={"SLOW": 20})
    assert next_delay(policy, 1, status("SLOW"), time_left=None) == 20
    assert next_delay(policy, 1, status("OTHER"), time_left=None) == 5


def test_retry_after_is_a_floor_never_undercut():
    policy = PollPolicy(interval=5)
    assert next_delay(policy, 1, status(retry_after=12), time_left=None) == 12
    assert next_delay(policy, 1, status(retry_after=2), time_left=None) == 5


def test_retry_after_can_be_ignored_by_choice():
    policy = PollPolicy(interval=5, honour_retry_after=False)
    assert next_delay(policy, 1, status(retry_after=12), time_left=None) == 5


def test_min_interval_floor():
    policy = PollPolicy(interval=0.2, min_interval=1)
    assert next_delay(policy, 1, status(), time_left=None) == 1


def test_last_poll_is_fitted_to_deadline():
    policy = PollPolicy(interval=30)
    assert next_delay(policy, 1, status(), time_left=7.5) == 7.5


def test_jitter_stays_within_bounds_and_is_seeded():
    policy = PollPolicy(interval=10, jitter=0.2, max_interval=20)
    rng = random.Random(1)
    delays = [next_delay(policy, 1, status(), time_left=None, rng=rng) for _ in range(200)]
    assert all(8 <= d <= 12 for d in delays) and len(set(delays)) > 100
    again = [
        next_delay(policy, 1, status(), time_left=None, rng=random.Random(1)) for _ in range(1)
    ]
    assert again[0] == delays[0]


def test_error_delay_backs_off_and_honours_retry_after():
    policy = PollPolicy(error_backoff=2, error_backoff_multiplier=2, max_error_backoff=10)
    assert [error_delay(policy, n, None) for n in (1, 2, 3, 4)] == [2, 4, 8, 10]
    assert error_delay(policy, 1, 42) == 42


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"interval": -1}, "greater than 0"),
        ({"interval": 0}, "greater than 0"),
        ({"initial_delay": -5}, "greater than or equal to 0"),
        ({"deadline": 10, "initial_delay": 10}, "must be after the first poll"),
        ({"interval": 50, "max_interval": 10}, "below interval"),
        ({"phase_intervals": {"A": 0}}, "positive"),
        ({"multiplier": 0.5}, "greater than or equal to 1"),
        ({"jitter": 2}, "less than or equal to 1"),
        ({"error_budget": -1}, "greater than or equal to 0"),
        ({"unknown_field": 1}, "Extra inputs"),
    ],
)
def test_invalid_policies_are_refused_with_a_clear_message(fields, message):
    with pytest.raises(ValidationError, match=message):
        PollPolicy(**fields)


def test_scaled_scales_every_duration():
    policy = PollPolicy(
        initial_delay=10,
        interval=5,
        max_interval=30,
        deadline=300,
        phase_intervals={"A": 20},
        min_interval=1,
    )
    scaled = policy.scaled(0.01)
    assert (scaled.initial_delay, scaled.interval, scaled.max_interval, scaled.deadline) == (
        0.1,
        0.05,
        0.3,
        3.0,
    )
    assert scaled.phase_intervals == {"A": 0.2} and scaled.min_interval == 0.01
    assert scaled.multiplier == policy.multiplier


def test_with_revalidates():
    with pytest.raises(ValidationError):
        PollPolicy().with_(interval=-3)
    assert PollPolicy().with_(deadline=60).deadline == 60
