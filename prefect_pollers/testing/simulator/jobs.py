"""The job model: a few numbers from which the status is computed lazily.

A job holds no timer and no task. It stores when it was created, when each of its
non-terminal phases ends and when (if ever) it becomes terminal, all in real
monotonic seconds; its status at any instant is read off that timeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

NEVER = math.inf
"""The end time of a job that never finishes."""


@dataclass(slots=True, eq=False)
class Job:
    """One simulated remote job.

    Attributes:
        id: The provider's identifier for the job.
        seq: A process-unique sequence number.
        created: Real monotonic creation time.
        created_wall: Epoch creation time, for timestamps in responses.
        phases: ``(status, ends_at)`` pairs, in order, in real monotonic seconds.
        end: Real monotonic time at which the job becomes terminal (``NEVER`` if it
            never does); it can fall inside a phase, e.g. a failure mid-simulation.
        terminal: The terminal status the job reaches at ``end``.
        data: Provider-specific request data (company, scenario, model, ...).
        observed: Whether a client has been sent the terminal status.
        observed_at: Epoch time at which a client was first sent it.
        poll_open_at: Before this time a status poll is too early.
        next_poll_at: When the last Retry-After sent for this job runs out.
    """

    id: str
    seq: int
    created: float
    created_wall: float
    phases: tuple[tuple[str, float], ...]
    end: float
    terminal: str
    data: dict[str, Any] = field(default_factory=dict)
    observed: bool = False
    observed_at: float | None = None
    poll_open_at: float = -math.inf
    next_poll_at: float = -math.inf

    def is_terminal(self, now: float) -> bool:
        """Whether the job has reached its terminal status at ``now``."""
        return now >= self.end

    def status(self, now: float) -> str:
        """The job's status at ``now``."""
        if now >= self.end:
            return self.terminal
        for name, ends_at in self.phases:
            if now < ends_at:
                return name
        return self.phases[-1][0]

    def progress(self, now: float) -> float:
        """Fraction of the planned timeline elapsed at ``now`` (1.0 once it succeeded)."""
        planned = self.phases[-1][1] - self.created if self.phases else 0.0
        if planned <= 0:
            return 1.0
        return min(1.0, (min(now, self.end) - self.created) / planned)

    def end_wall(self) -> float:
        """Epoch time at which the job became (or will become) terminal."""
        return self.created_wall + (self.end - self.created)

    def end_now(self, now: float, status: str) -> None:
        """Make the job terminal with ``status`` at ``now`` (e.g. on cancellation)."""
        self.end = now
        self.terminal = status
