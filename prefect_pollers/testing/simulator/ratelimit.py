"""A fixed-window request limiter keyed by API key, with windows aligned to the epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RateDecision:
    """The limiter's verdict on one request.

    Attributes:
        admitted: Whether the request may be processed.
        limit: Requests allowed per window.
        remaining: Requests left in the current window after this one.
        reset_at: Epoch seconds at which the current window ends.
    """

    admitted: bool
    limit: int
    remaining: int
    reset_at: float


class FixedWindowLimiter:
    """Admits at most ``limit`` requests per key in each window of ``window`` seconds."""

    def __init__(self) -> None:
        """Start with no requests seen."""
        self._windows: dict[str, tuple[int, int]] = {}
        self.max_requests = 0
        """The most requests admitted in any one window, for checking the limit held."""

    def admit(self, key: str, now: float, limit: int, window: float) -> RateDecision:
        """Count a request for ``key`` at epoch time ``now`` unless its window is full."""
        index = math.floor(now / window)
        seen_index, count = self._windows.get(key, (index, 0))
        if seen_index != index:
            count = 0
        reset_at = (index + 1) * window
        if count >= limit:
            return RateDecision(False, limit, 0, reset_at)
        count += 1
        self._windows[key] = (index, count)
        self.max_requests = max(self.max_requests, count)
        return RateDecision(True, limit, limit - count, reset_at)
