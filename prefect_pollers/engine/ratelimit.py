"""A client-side mirror of a provider's rate-limit window, shared by every call of one key.

Providers such as ModelRoute send ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``
and ``X-RateLimit-Reset`` on every response. Every request made with one
credentials block passes through one :class:`RateLimitGate`: it counts the requests
it lets through against the remaining budget, and when that reaches zero it holds
further requests until the window resets, instead of collecting 429s. Until the
first response tells whether the provider limits at all, one request goes alone
(so a burst of submits cannot overshoot an unknown limit); providers that send no
such headers are never held again.
"""

from __future__ import annotations

import asyncio

from prefect_pollers.engine.clock import Clock
from prefect_pollers.engine.models import ServerHints


class RateLimitGate:
    """Holds requests while the server's advertised budget is spent.

    Args:
        margin: Seconds added after the advertised reset before sending again,
            for clock skew between client and server.
    """

    def __init__(self, margin: float = 0.05) -> None:
        self.margin = margin
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset_at: float | None = None
        self.expired_reset: float | None = None  # the end of the last window we saw over
        self.held = 0
        self.in_flight = 0
        self.limited: bool | None = None  # unknown until a response says
        self._news = asyncio.Event()

    async def acquire(self, clock: Clock, *, until: float | None = None) -> bool:
        """Wait until one more request fits in the window, and count it.

        Args:
            clock: Where the time is read and the hold sleeps.
            until: Epoch seconds past which the caller cannot use the request (a
                wait's deadline): a hold that would last longer is not started.

        Returns:
            True when the request may go (it is counted); False, at once and
            uncounted, when the window resets only after ``until``.
        """
        while self.limited is None and self.in_flight > 0:
            await self._wait_for_news()
        while True:
            now = clock.time()
            if self.reset_at is not None and now >= self.reset_at + self.margin:
                # The window we knew of is over: a fresh one allows `limit` again,
                # until a response tells us its own remaining and reset. Requests
                # still in flight may reach the server in the new window: count
                # them there until their answers say otherwise.
                if self.limit is not None:
                    self.remaining = self.limit - self.in_flight
                self.expired_reset, self.reset_at = self.reset_at, None
            if self.remaining is None or self.remaining > 0:
                if self.remaining is not None:
                    self.remaining -= 1
                self.in_flight += 1
                return True
            if self.reset_at is not None:
                if until is not None and self.reset_at + self.margin > until:
                    return False
                self.held += 1
                await clock.sleep(self.reset_at + self.margin - now)
            else:
                self.held += 1
                if not await self._wait_for_news() and self.in_flight == 0:
                    # Spent with no known reset, and no answer will tell: try again.
                    self.remaining = self.limit

    def _is_over(self, reset: float) -> bool:
        """Whether a window ending at ``reset`` ended before the current one."""
        if self.reset_at is not None:
            return reset < self.reset_at
        return self.expired_reset is not None and reset <= self.expired_reset

    def seconds_to_reset(self, clock: Clock) -> float | None:
        """Seconds until the known window resets (None when none is known)."""
        if self.reset_at is None:
            return None
        return max(0.0, self.reset_at + self.margin - clock.time())

    async def _wait_for_news(self, timeout: float = 1.0) -> bool:
        """Wait until a response is released (True) or ``timeout`` real seconds pass."""
        self._news.clear()
        try:
            await asyncio.wait_for(self._news.wait(), timeout=timeout)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            return False
        return True

    def release(self, hints: ServerHints | None) -> None:
        """Close a request let through by :meth:`acquire`, with its response's hints.

        Args:
            hints: The response's server hints, or None when no response came.
        """
        self.in_flight = max(0, self.in_flight - 1)
        if hints is None:
            self._news.set()
            return
        if hints.ratelimit_remaining is None:
            if self.limited is None:
                self.limited = False
            self._news.set()
            return
        self.limited = True
        if hints.ratelimit_limit is not None:
            self.limit = hints.ratelimit_limit
        reset = hints.ratelimit_reset
        if reset is not None and self._is_over(reset):
            # A late answer from a window already over: it must not refill ours. If
            # it was counted in the fresh window we assumed, it did not reach it.
            if self.reset_at is None and self.remaining is not None:
                self.remaining += 1
            self._news.set()
            return
        if reset is not None and reset != self.reset_at:
            # A new window: the server's count replaces ours, less the requests still
            # in flight, which it may not have counted yet (so we never overshoot).
            self.reset_at = reset
            self.remaining = max(0, hints.ratelimit_remaining - self.in_flight)
        elif self.remaining is None or hints.ratelimit_remaining < self.remaining:
            self.remaining = hints.ratelimit_remaining
        self._news.set()
