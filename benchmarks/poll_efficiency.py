"""Poll efficiency on virtual time: our Twyn policy against the Twyn guide's own loops.

500 Twyn-like jobs (seeded) whose phases last U(60,120), U(120,240) and U(60,120)
seconds. Each is waited for three ways on a virtual clock (deterministic, instant):

- ours: the engine's wait loop with the default Twyn policy (``twyn_policy``);
- fixed: the guide's basic loop, poll then sleep 5 s (the ``baseline``);
- backoff: the guide's backoff loop, sleeping 2, 5, 10, 15, then 30 s.

Calls are status requests per job; lag is the time from the job's completion to
the poll that notices it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from benchmarks.common import emit, percentile
from prefect_pollers import JobState, JobStatus
from prefect_pollers.engine import wait_for_terminal
from prefect_pollers.providers import twyn_policy
from prefect_pollers.providers.twyn import ANALYSIS, CONFIG, SIMULATION
from prefect_pollers.testing import VirtualClock

START = 1_700_000_000.0
TIMEOUT = 600.0


@dataclass(frozen=True)
class TwynLikeJob:
    """A job's phase end times, in seconds after submission."""

    config_end: float
    simulation_end: float
    done_at: float

    def status(self, elapsed: float) -> JobStatus:
        """The status a poll at ``elapsed`` seconds sees."""
        if elapsed >= self.done_at:
            return JobStatus(
                job_id="j",
                state=JobState.SUCCEEDED,
                raw_status="COMPLETED_ANALYSIS",
                phase="COMPLETED_ANALYSIS",
            )
        phase = (
            CONFIG
            if elapsed < self.config_end
            else (SIMULATION if elapsed < self.simulation_end else ANALYSIS)
        )
        return JobStatus(job_id="j", state=JobState.RUNNING, raw_status=phase, phase=phase)


def make_jobs(count: int, seed: int) -> list[TwynLikeJob]:
    """``count`` jobs with the guide's phase durations, seeded."""
    rng = random.Random(seed)
    jobs = []
    for _ in range(count):
        config = rng.uniform(60, 120)
        simulation = config + rng.uniform(120, 240)
        jobs.append(TwynLikeJob(config, simulation, simulation + rng.uniform(60, 120)))
    return jobs


Strategy = Callable[[Callable[[], Awaitable[JobStatus]], VirtualClock], Awaitable[None]]


async def ours(poll: Callable[[], Awaitable[JobStatus]], clock: VirtualClock) -> None:
    """The engine's wait loop with our default Twyn policy."""
    await wait_for_terminal(
        poll, twyn_policy(), provider="twyn", job_id="j", started_at=START, clock=clock
    )


async def guide_fixed(poll: Callable[[], Awaitable[JobStatus]], clock: VirtualClock) -> None:
    """The guide's ``poll_simulation``: poll, then sleep 5 s, until done or 600 s."""
    while clock.time() - START < TIMEOUT:
        if (await poll()).state.terminal:
            return
        await clock.sleep(5)


async def guide_backoff(poll: Callable[[], Awaitable[JobStatus]], clock: VirtualClock) -> None:
    """The guide's ``poll_with_backoff``: sleeps of 2, 5, 10, 15, then 30 s."""
    intervals = [2, 5, 10, 15, 30]
    index = 0
    while clock.time() - START < TIMEOUT:
        if (await poll()).state.terminal:
            return
        await clock.sleep(intervals[min(index, len(intervals) - 1)])
        index += 1


def measure(strategy: Strategy, jobs: list[TwynLikeJob]) -> dict[str, float]:
    """Calls per job and lag figures of ``strategy`` over ``jobs``."""
    calls, lags = [], []
    for job in jobs:
        clock = VirtualClock(START)
        count = 0
        noticed: list[float] = []

        async def poll(
            job: TwynLikeJob = job, clock: VirtualClock = clock, noticed: list[float] = noticed
        ) -> JobStatus:
            nonlocal count
            count += 1
            status = job.status(clock.time() - START)
            if status.state.terminal:
                noticed.append(clock.time() - START)
            return status

        asyncio.run(strategy(poll, clock))
        if not noticed:
            raise RuntimeError(f"{strategy.__name__} never noticed a job finish")
        calls.append(count)
        lags.append(noticed[0] - job.done_at)
    return {
        "calls_per_job": round(statistics.fmean(calls), 2),
        "mean_lag_s": round(statistics.fmean(lags), 2),
        "p95_lag_s": round(percentile(lags, 0.95), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    jobs = make_jobs(args.jobs, args.seed)
    ours_figures = measure(ours, jobs)
    fixed = measure(guide_fixed, jobs)
    backoff = measure(guide_backoff, jobs)
    emit(
        "poll_efficiency",
        jobs=args.jobs,
        seed=args.seed,
        **ours_figures,
        baseline_calls_per_job=fixed["calls_per_job"],
        calls_ratio=round(ours_figures["calls_per_job"] / fixed["calls_per_job"], 3),
        baseline_mean_lag_s=fixed["mean_lag_s"],
        baseline_p95_lag_s=fixed["p95_lag_s"],
        backoff_calls_per_job=backoff["calls_per_job"],
        backoff_calls_ratio=round(backoff["calls_per_job"] / fixed["calls_per_job"], 3),
        backoff_mean_lag_s=backoff["mean_lag_s"],
        backoff_p95_lag_s=backoff["p95_lag_s"],
    )


if __name__ == "__main__":
    main()
