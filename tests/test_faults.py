"""Injected faults over a few hundred concurrent jobs of all five providers.

Every job is submitted and waited for through the provider blocks, concurrently, with
the submit retries of the client (the one retry layer of submits: only what surely
created no job) and the wait retries of the Prefect task (``retry_wait_when_transient``,
with the task's retry count), against
the simulator with faults on every route: 5xx with and without ``Retry-After``,
connection resets, responses slower than the client's timeout, 429 bursts, malformed,
HTML and empty bodies, missing, mistyped and unknown statuses, and jobs that never
finish. The simulator's own record of every job is the ground truth.

Asserted:
- every job ends in its true terminal outcome, or in a typed ``PollerError``;
- no job is lost: every job the simulator created was either seen to its terminal
  status by the client, or the client got an error saying it may exist (a submit whose
  failure does not rule out creation, a wait that gave up on a job still running);
- no duplicate submission (``duplicate_submits`` == 0), and a submit error that the
  retry rule calls "surely not created" really created nothing;
- no wait ends later than its deadline plus one poll interval: the policy's interval
  plus the one request in flight at the deadline (at most the block's timeout), plus
  whatever time the event loop was measurably starved of the CPU, plus 0.5 s (the
  sampler misses some starvation on a loaded machine: overshoots of 0.1 s past the
  bound were seen with two test runs sharing 2 cores).

The wait task's retries are mirrored, not run through Prefect, so that a few hundred
jobs fit in seconds: same decisions and retry count, but pauses of 50 ms instead of
Prefect's 10-40 s. The summary line (``FAULT RUN {...}``) shows with
``pytest -s``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, get_args

import pytest
from prefect.states import Failed
from typing_extensions import Self  # typing.Self is Python 3.11+

from prefect_pollers import (
    JobApiCredentials,
    JobCancelledError,
    JobEndedError,
    JobExpiredError,
    JobFailedError,
    JobRef,
    JobState,
    PollerError,
    WaitTimeoutError,
)
from prefect_pollers.client import shared_client
from prefect_pollers.tasks.submit_wait import retry_wait_when_transient, wait_for_job
from prefect_pollers.testing.registry import varied_request
from prefect_pollers.testing.simulator import FaultRule, SimulatorConfig
from prefect_pollers.testing.simulator.config import FaultKind, RouteKind, every_fault_kind
from tests.providers import PROVIDER_TABLE

pytestmark = pytest.mark.slow  # ~20 s: 250 jobs through every fault

SEED = 20261123
SCALE = 0.03  # simulated seconds -> real seconds, for the simulator and the policies
TIMEOUT_S = 0.3  # the blocks' HTTP timeout
SLOW_S = 0.6  # the "slow" fault answers after this: always a client timeout
JOBS_PER_PROVIDER = 50
SUBMITS_AT_ONCE = 25
RETRY_PAUSE_S = 0.05  # the wait task's retry delays (10 s, ... real) shortened for the test
MAYBE_CREATED = "may have been created"

RATES: dict[RouteKind, float] = {"submit": 0.01, "status": 0.015, "result": 0.04}


def fault_rules() -> list[FaultRule]:
    """Every fault kind, by rate, on the submit, status and result routes of every provider."""
    return every_fault_kind(RATES, slow_s=SLOW_S, reset_after_create=0.03)


def sim_config() -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=SCALE,
        seed=SEED,
        faults=fault_rules(),
        failure_rate=0.08,
        never_finish_rate=0.02,
        modelroute_cancel_rate=0.04,
        modelroute_expire_rate=0.04,
        generic_timeout_rate=0.04,
        rate_limit=100_000,  # the rate-limit gate is tested elsewhere; here, faults only
        twyn_config_duration=(60, 90),
        twyn_simulation_duration=(120, 160),
        twyn_analysis_duration=(60, 90),
    )


def blocks(sim) -> dict[str, JobApiCredentials]:
    return {
        p.name: p.block(sim.base_url(p.name), policy_scale=SCALE, timeout_s=TIMEOUT_S)
        for p in PROVIDER_TABLE
    }


@dataclass
class Job:
    """What the client saw of one job."""

    provider: str
    key: str
    ref: JobRef | None = None
    submit_error: PollerError | None = None
    outcome: JobState | None = None  # a terminal outcome the client observed
    error: PollerError | None = None  # the wait's final error, if not an outcome
    other: BaseException | None = None  # anything untyped (a failure of the test)
    deadline: float | None = None
    interval: float | None = None
    overshoot: float = 0.0  # seconds past the deadline at which the last wait ended
    wait_attempts: int = 0


_OUTCOME = {
    JobFailedError: JobState.FAILED,
    JobCancelledError: JobState.CANCELLED,
    JobExpiredError: JobState.EXPIRED,
}


async def submit(creds: JobApiCredentials, job: Job, body: dict[str, Any]) -> None:
    """Submit as ``submit_job`` does (the client retries only what surely created nothing)."""
    try:
        job.ref = await shared_client(creds).submit(body, idempotency_key=job.key)
    except PollerError as exc:
        job.submit_error = exc


async def wait(creds: JobApiCredentials, job: Job) -> None:
    """Wait and fetch the result, retried as ``wait_for_job`` retries (re-attaching)."""
    policy = creds.effective_policy(job.ref)
    job.deadline, job.interval = policy.deadline, policy.interval
    start = job.ref.submitted_at.timestamp()
    for attempt in range(wait_for_job.retries + 1):
        job.wait_attempts += 1
        status = None
        try:
            status = await shared_client(creds).wait(job.ref)
        except JobEndedError as exc:
            job.outcome = _OUTCOME[type(exc)]
        except PollerError as exc:
            job.error = exc
        finally:
            job.overshoot = max(job.overshoot, time.time() - start - policy.deadline)
        if status is not None:
            try:
                await shared_client(creds).fetch_result(job.ref, status)
                job.outcome, job.error = JobState.SUCCEEDED, None
            except PollerError as exc:
                job.error = exc
        if job.error is None:
            return
        retry = await retry_wait_when_transient(wait_for_job, None, Failed(data=job.error))
        if not retry or attempt == wait_for_job.retries:
            return
        job.error = None
        await asyncio.sleep(RETRY_PAUSE_S)


async def one(
    creds: JobApiCredentials, job: Job, body: dict[str, Any], submits: asyncio.Semaphore
) -> None:
    try:
        async with submits:  # a real client does not open hundreds of connections at once
            await submit(creds, job, body)
        if job.ref is not None:
            await wait(creds, job)
    except Exception as exc:
        job.other = exc


class LoopLag:
    """The longest the event loop was late (CPU starvation is not the wait's fault)."""

    def __init__(self) -> None:
        self.max = 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.max = max(self.max, time.monotonic() - before - 0.01)

    def __enter__(self) -> Self:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self._task.cancel()


def quiescent_stats(sim) -> tuple[dict[str, Any], float]:
    """The simulator's counters and a time at which no job turned terminal since they were read."""
    ends = [job.end for p in sim.state.providers.values() for job in p.jobs.values()]
    while True:
        before = time.monotonic()
        stats = sim.state.stats()
        after = time.monotonic()
        if not any(before <= end <= after for end in ends):
            return stats, after


async def test_faults_over_hundreds_of_concurrent_jobs_lose_nothing_and_submit_once(sim):
    sim.state.config = sim_config()
    sim.state.reset()
    creds = blocks(sim)
    jobs = [
        Job(provider, f"fault-{provider}-{i}")
        for i in range(JOBS_PER_PROVIDER)
        for provider in creds
    ]
    submits = asyncio.Semaphore(SUBMITS_AT_ONCE)
    started = time.monotonic()
    with LoopLag() as lag:
        await asyncio.gather(
            *(
                one(creds[job.provider], job, varied_request(job.provider, i), submits)
                for i, job in enumerate(jobs)
            )
        )
    elapsed = time.monotonic() - started
    await asyncio.sleep(SLOW_S)  # a slow submit creates its job after the client gave up
    stats, now = quiescent_stats(sim)

    assert [(j.key, repr(j.other)) for j in jobs if j.other] == []
    problems: list[str] = []
    unseen = 0  # terminal jobs whose outcome no client saw, job by job
    announced = 0  # of which the client was told they may exist, or may still be running
    lost = 0  # created or ended without the client seeing it or being told
    never_learned = 0  # jobs created whose id the client never got
    for provider, block in creds.items():
        mine = [j for j in jobs if j.provider == provider]
        per_key = stats[provider]["submits_per_idempotency_key"]
        sim_jobs = sim.state.providers[provider].jobs
        known = {j.ref.job_id for j in mine if j.ref}
        orphans = [s for job_id, s in sim_jobs.items() if job_id not in known]

        # Submits: a job the client knows was created once; a submit error says whether
        # the job may exist, and one that the retry rule calls safe created nothing.
        said_maybe = 0
        for job in mine:
            created = per_key.get(job.key, 0)
            if job.ref is not None and created != 1:
                problems.append(f"{job.key}: known as {job.ref.job_id}, created {created} times")
            exc = job.submit_error
            if exc is None:
                continue
            safe = not exc.may_have_created
            if safe and created:
                problems.append(f"{job.key}: retry rule says not created, yet it was: {exc}")
            if not safe and MAYBE_CREATED not in str(exc):
                problems.append(f"{job.key}: submit error hides that the job may exist: {exc}")
            if created and not safe:
                said_maybe += 1
        if len(orphans) > said_maybe:
            problems.append(
                f"{provider}: {len(orphans)} jobs whose id the client never learned, "
                f"only {said_maybe} announced by a submit error"
            )
            lost += len(orphans) - said_maybe
        never_learned += len(orphans)
        left_unseen = sum(1 for s in orphans if s.end <= now and not s.observed)
        unseen += left_unseen
        announced += min(left_unseen, said_maybe)

        # Waits: the client's outcome is the simulator's truth; a job left terminal and
        # unobserved is one whose wait ended in an error saying it may still be running.
        for job in mine:
            if job.ref is None:
                continue
            truth = sim_jobs[job.ref.job_id]
            true_state = block.contract().status_map.classify(truth.terminal)[0]
            if job.outcome is not None and (truth.end == math.inf or job.outcome != true_state):
                problems.append(
                    f"{job.key}: client saw {job.outcome.value}, the job "
                    f"{'never ends' if truth.end == math.inf else truth.terminal}"
                )
            if job.outcome is not None and not truth.observed:
                problems.append(
                    f"{job.key}: outcome {job.outcome.value} never sent by the simulator"
                )
            if job.outcome is None and not isinstance(job.error, PollerError):
                problems.append(f"{job.key}: neither an outcome nor a typed error")
            if truth.end <= now and not truth.observed:
                unseen += 1
                if isinstance(job.error, PollerError) and job.outcome is None:
                    announced += 1
                else:
                    lost += 1
            bound = job.interval + TIMEOUT_S + lag.max + 0.5
            if job.overshoot > bound:
                problems.append(
                    f"{job.key}: wait ended {job.overshoot:.3f} s after its "
                    f"{job.deadline:g} s deadline (bound {bound:.3f} s)"
                )

    unobserved = sum(s["unobserved_terminal_jobs"] for s in stats.values())
    faults: Counter[str] = Counter()
    sim_outcomes: Counter[str] = Counter()
    for provider_stats in stats.values():
        faults.update(provider_stats["faults_injected"])
        sim_outcomes.update(provider_stats["outcomes"])
    client_outcomes = Counter(
        j.outcome.value
        if j.outcome
        else "timed_out"
        if isinstance(j.error, WaitTimeoutError)
        else f"{'submit' if j.submit_error else 'wait'}:{type(j.error or j.submit_error).__name__}"
        for j in jobs
    )
    summary = {
        "jobs": len(jobs),
        "elapsed_s": round(elapsed, 1),
        "loop_lag_max_s": round(lag.max, 3),
        "faults_injected": dict(sorted(faults.items())),
        "faults_total": sum(faults.values()),
        "client_outcomes": dict(sorted(client_outcomes.items())),
        "simulator_outcomes": dict(sorted(sim_outcomes.items())),
        "submits": sum(s["submits"] for s in stats.values()),
        "duplicates": sum(s["duplicate_submits"] for s in stats.values()),
        "ids_never_learned": never_learned,
        "unobserved_terminal_jobs": unobserved,
        "of_which_announced_by_an_error": announced,
        "lost": lost,
        "max_overshoot_s": round(max(j.overshoot for j in jobs if j.ref), 3),
        "wait_retries": sum(max(0, j.wait_attempts - 1) for j in jobs),
    }
    print("\nFAULT RUN", json.dumps(summary, sort_keys=True))
    if problems:
        print("\n".join(problems))

    assert problems == []
    assert all(s["duplicate_submits"] == 0 for s in stats.values())
    assert lost == 0 and unobserved == unseen == announced  # the counter agrees, job by job
    assert len(jobs) >= 200 and set(faults) == set(get_args(FaultKind))
