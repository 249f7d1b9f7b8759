"""Where verified callbacks meet the waits of this process.

A wait registers its job and gets a :class:`~prefect_pollers.engine.Wakeup`; a
verified callback, received by a receiver in this process or from Prefect's event
stream, is delivered here and wakes it. A callback for a job no wait has registered
yet (it arrived before the submit response, or between a retried task's runs) is
kept for a while and wakes the wait as soon as it registers: none is lost. One
callback delivered twice (directly and through the event stream, or duplicated by
the provider) wakes a wait once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from prefect_pollers.engine import JobRef, JobStatus, Wakeup

KEEP_S = 900.0
"""How long a callback for a job no wait has registered is kept (seconds)."""
MAX_KEPT = 50_000
"""The most such callbacks kept (the oldest go first)."""
MAX_SEEN = 100_000
"""How many delivery ids are remembered to drop duplicates."""

DeliveryResult = Literal["woken", "kept", "duplicate", "mismatched"]


@dataclass(frozen=True)
class Delivery:
    """One verified callback, as the receiver passes it on.

    Attributes:
        provider: The provider's short name.
        job_id: The job the callback names.
        delivery_id: Unique per callback (the ``webhook-id``, or a digest).
        nonce: The capability token's nonce (None for a signed callback).
        status: The callback's own status, when its block trusts signed callbacks.
    """

    provider: str
    job_id: str
    delivery_id: str
    nonce: str | None = None
    status: JobStatus | None = None


class CallbackInbox:
    """The registry of this process's callback waits, safe to use from any thread.

    Args:
        keep_s: How long an early callback is kept.
        max_kept: The most early callbacks kept.
        now: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        keep_s: float = KEEP_S,
        max_kept: int = MAX_KEPT,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep_s = keep_s
        self._max_kept = max_kept
        self._now = now
        self._lock = threading.Lock()
        self._waits: dict[tuple[str, str], list[tuple[str | None, Wakeup]]] = {}
        self._kept: OrderedDict[tuple[str, str], tuple[float, Delivery]] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()

    def register(self, ref: JobRef) -> Wakeup:
        """A wake-up for ``ref``'s wait; already set if its callback came first.

        Call it on the wait's event loop.
        """
        wakeup = Wakeup()
        nonce = ref.callback.nonce if ref.callback else None
        key = (ref.provider, ref.job_id)
        with self._lock:
            self._waits.setdefault(key, []).append((nonce, wakeup))
            kept = self._kept.pop(key, None)
        if kept is not None and self._matches(nonce, kept[1]):
            wakeup.set(kept[1].status)
        return wakeup

    def unregister(self, ref: JobRef, wakeup: Wakeup) -> None:
        """Forget a wait (its job ended, or the wait stopped)."""
        key = (ref.provider, ref.job_id)
        with self._lock:
            waits = [entry for entry in self._waits.get(key, []) if entry[1] is not wakeup]
            if waits:
                self._waits[key] = waits
            else:
                self._waits.pop(key, None)

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        """Wake the waits of the callback's job, or keep it for a wait to come.

        Returns:
            ``woken``; ``kept`` (no wait yet); ``duplicate`` (seen before);
            ``mismatched`` (a wait exists but the token's nonce is not its own).
        """
        key = (delivery.provider, delivery.job_id)
        with self._lock:
            if delivery.delivery_id in self._seen:
                return "duplicate"
            self._seen[delivery.delivery_id] = None
            while len(self._seen) > MAX_SEEN:
                self._seen.popitem(last=False)
            waits = list(self._waits.get(key, []))
            if not waits:
                self._keep(key, delivery)
                return "kept"
        woken = [wakeup for nonce, wakeup in waits if self._matches(nonce, delivery)]
        for wakeup in woken:
            wakeup.set(delivery.status)
        return "woken" if woken else "mismatched"

    def waiting(self) -> int:
        """How many jobs have a wait registered."""
        with self._lock:
            return len(self._waits)

    def _keep(self, key: tuple[str, str], delivery: Delivery) -> None:
        now = self._now()
        self._kept[key] = (now, delivery)
        self._kept.move_to_end(key)
        while self._kept and (
            len(self._kept) > self._max_kept
            or next(iter(self._kept.values()))[0] < now - self._keep_s
        ):
            self._kept.popitem(last=False)

    @staticmethod
    def _matches(nonce: str | None, delivery: Delivery) -> bool:
        # A capability-URL wait is woken only by its own token; a signed-scheme wait
        # by any verified callback that names its job.
        return nonce is None or delivery.nonce == nonce


INBOX = CallbackInbox()
"""The inbox of this process: receivers deliver here, waits register here."""
