"""Per-provider counters, and the ledger that tracks jobs in flight without timers."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prefect_pollers.testing.simulator.jobs import Job


class JobLedger:
    """Counts jobs in flight and terminal outcomes from the jobs' end times alone.

    End times sit in a min-heap; asking for the number in flight pops the ones that
    have passed and books their outcome. A job ended early (cancelled) is booked at
    once and its stale heap entry is skipped when it comes out.
    """

    def __init__(self) -> None:
        """Start empty."""
        self._ends: list[tuple[float, int, str]] = []
        self._ended_early: set[int] = set()
        self.outcomes: Counter[str] = Counter()
        self.total = 0

    def add(self, job: Job, now: float) -> None:
        """Book a new job."""
        self.total += 1
        if job.is_terminal(now):
            self.outcomes[job.terminal] += 1
        else:
            heapq.heappush(self._ends, (job.end, job.seq, job.terminal))

    def ended_early(self, job: Job) -> None:
        """Book a job that an in-flight cancellation just made terminal."""
        self._ended_early.add(job.seq)
        self.outcomes[job.terminal] += 1

    def in_flight(self, now: float) -> int:
        """Number of jobs not terminal at ``now``; books the outcomes of those that ended."""
        while self._ends and self._ends[0][0] <= now:
            _, seq, terminal = heapq.heappop(self._ends)
            if seq in self._ended_early:
                self._ended_early.discard(seq)
            else:
                self.outcomes[terminal] += 1
        return len(self._ends) - len(self._ended_early)


@dataclass
class ProviderStats:
    """What one provider has seen, for ``GET /_sim/stats``."""

    ledger: JobLedger = field(default_factory=JobLedger)
    submits_per_idempotency_key: Counter[str] = field(default_factory=Counter)
    status_calls_per_job: Counter[str] = field(default_factory=Counter)
    faults_injected: Counter[str] = field(default_factory=Counter)
    faults_on_submit: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    status_calls: int = 0
    max_jobs_in_flight: int = 0
    observed_terminal: int = 0
    cancels: int = 0
    not_visible_404: int = 0
    first_submit_at: float | None = None
    last_submit_at: float | None = None

    def record_fault(self, kind: str, route: str) -> None:
        """Book a fault of ``kind`` injected on a request to ``route``."""
        self.faults_injected[kind] += 1
        if route == "submit":
            self.faults_on_submit[kind] += 1

    def record_submit(self, job: Job, now: float, idempotency_key: str | None) -> None:
        """Book a submit POST that created ``job``."""
        self.ledger.add(job, now)
        if self.first_submit_at is None:
            self.first_submit_at = now
        self.last_submit_at = now
        if idempotency_key is not None:
            self.submits_per_idempotency_key[idempotency_key] += 1
        self.max_jobs_in_flight = max(self.max_jobs_in_flight, self.ledger.in_flight(now))

    def record_status_call(self, job: Job) -> None:
        """Book a status response served for ``job``."""
        self.status_calls += 1
        self.status_calls_per_job[job.id] += 1

    def record_observed(self, job: Job, now: float) -> None:
        """Book that a client was sent ``job``'s terminal status at ``now`` (monotonic)."""
        if not job.observed:
            job.observed = True
            job.observed_at = job.created_wall + (now - job.created)
            self.observed_terminal += 1

    def snapshot(self, now: float) -> dict[str, Any]:
        """The counters as plain JSON-ready values.

        ``submit_span_s`` is the real time from the first submit to the last, and
        ``submits_per_s`` the submits over that span (None while it is zero).
        """
        in_flight = self.ledger.in_flight(now)
        span = 0.0
        if self.first_submit_at is not None and self.last_submit_at is not None:
            span = self.last_submit_at - self.first_submit_at
        return {
            "submits": self.ledger.total,
            "submit_span_s": span,
            "submits_per_s": self.ledger.total / span if span > 0 else None,
            "submits_per_idempotency_key": dict(self.submits_per_idempotency_key),
            "duplicate_submits": sum(n - 1 for n in self.submits_per_idempotency_key.values()),
            "status_calls": self.status_calls,
            "status_calls_per_job": dict(self.status_calls_per_job),
            "jobs_in_flight": in_flight,
            "max_jobs_in_flight": self.max_jobs_in_flight,
            "http_429": self.responses[429],
            "http_401": self.responses[401],
            "http_422": self.responses[422],
            "faults_injected": dict(self.faults_injected),
            "faults_on_submit": dict(self.faults_on_submit),
            "outcomes": dict(self.ledger.outcomes),
            "unobserved_terminal_jobs": self.ledger.total - in_flight - self.observed_terminal,
            "cancels": self.cancels,
            "not_visible_404": self.not_visible_404,
        }
