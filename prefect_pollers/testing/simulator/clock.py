"""Where the simulator reads the time: the real clocks, or a manual one for tests.

The protocol is named :class:`SimulatorClock` (not ``Clock``) because the polling
engine has a ``Clock`` of its own (``time`` and ``sleep``); the simulator only reads
time, never sleeps on it.
"""

from __future__ import annotations

import time
from typing import Protocol


class SimulatorClock(Protocol):
    """A source of monotonic time (job ages) and epoch time (timestamps, rate windows)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def time(self) -> float:
        """Seconds since the epoch."""
        ...


class RealClock:
    """The real clocks: ``time.monotonic()`` and ``time.time()``."""

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def time(self) -> float:
        """Return ``time.time()``."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to, so tests are exact and instant."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        """Start both readings at ``start`` epoch seconds."""
        self._now = start

    def monotonic(self) -> float:
        """Return the current manual time."""
        return self._now

    def time(self) -> float:
        """Return the current manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` real seconds.

        Raises:
            ValueError: If ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds
