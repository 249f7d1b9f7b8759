"""A wake-up call for a wait: a callback said the job ended, so poll now.

A :class:`Wakeup` belongs to one wait on one event loop. Whoever learns that the job
may have ended (a webhook receiver in this process, a subscription to Prefect's event
stream) calls :meth:`Wakeup.set`, from any thread; the wait, sleeping between polls,
wakes at once and confirms with one status call (or, for a trusted signed callback,
takes the status it carries). A wake-up set while the wait is not sleeping is kept
until the wait next pauses, so none is lost.
"""

from __future__ import annotations

import asyncio
import threading

from prefect_pollers.engine.clock import Clock
from prefect_pollers.engine.models import JobStatus


class Wakeup:
    """A thread-safe signal that ends a wait's pause early.

    Create it on the event loop of the wait it serves.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._lock = threading.Lock()
        self._status: JobStatus | None = None
        self.count = 0
        """How many wake-ups were delivered (duplicates included)."""

    def set(self, status: JobStatus | None = None) -> None:
        """Wake the wait; ``status`` is a trusted status the callback carried, if any.

        Safe to call from any thread and before the wait has started sleeping.
        """
        with self._lock:
            self.count += 1
            if status is not None:
                self._status = status
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._event.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    def is_set(self) -> bool:
        """Whether a wake-up is pending."""
        return self._event.is_set()

    def take(self) -> JobStatus | None:
        """Consume the pending wake-up; returns the trusted status it carried, if any."""
        with self._lock:
            status, self._status = self._status, None
        self._event.clear()
        return status

    async def pause(self, clock: Clock, seconds: float) -> bool:
        """Sleep ``seconds`` on ``clock`` unless woken first.

        Returns:
            True if a wake-up ended (or preceded) the pause.
        """
        if self._event.is_set():
            return True
        sleeper = asyncio.ensure_future(clock.sleep(seconds))
        waiter = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (sleeper, waiter):
                if not future.done():
                    future.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)
        return self._event.is_set()
