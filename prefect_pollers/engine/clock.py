"""The one injectable place every wait takes its time and its sleep from.

Production code uses :class:`SystemClock`. Tests and the poll-efficiency benchmark
install a :class:`VirtualClock` with :func:`use_clock`: sleeps then advance virtual
time instantly and deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import time
from collections.abc import Iterator
from typing import Protocol


class Clock(Protocol):
    """Where waits read the time (epoch seconds) and sleep."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Pause the calling coroutine for ``seconds``."""
        ...


class SystemClock:
    """Wall-clock time and ``asyncio.sleep``."""

    def time(self) -> float:
        """Seconds since the epoch, from the wall clock."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep`` (never negative)."""
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """Deterministic time for tests and simulations: sleeping costs no real time.

    Virtual time advances only when every coroutine sleeping on this clock is
    sleeping and nothing else is runnable, to the earliest wake-up time; so many
    concurrent waits interleave exactly as they would in real time.

    Args:
        start: The initial epoch time.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def time(self) -> float:
        """The virtual time, in epoch seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by hand (for code that reads the time without sleeping)."""
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Wake up when virtual time reaches now + ``seconds``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._counter), future))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    async def _drive(self) -> None:
        while self._sleepers:
            await _until_idle()
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                return
            wake_at, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake_at)
            future.set_result(None)


async def _until_idle(max_turns: int = 100_000) -> None:
    """Yield until no other callback is ready: everyone else sleeps or waits on I/O."""
    loop = asyncio.get_running_loop()
    for _ in range(max_turns):
        await asyncio.sleep(0)
        if not getattr(loop, "_ready", None):
            return


_SYSTEM_CLOCK = SystemClock()
_current: contextvars.ContextVar[Clock | None] = contextvars.ContextVar(
    "prefect_pollers_clock", default=None
)


def current_clock() -> Clock:
    """The clock waits use in this context (the system clock unless overridden)."""
    return _current.get() or _SYSTEM_CLOCK


@contextlib.contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Make every wait in this context use ``clock``.

    Example:
        ```python
        with use_clock(VirtualClock()):
            await wait_for_terminal(...)
        ```
    """
    token = _current.set(clock)
    try:
        yield clock
    finally:
        _current.reset(token)
