"""Where verified callbacks meet the waits of this process.

A wait registers its job and gets a :class:`~prefect_pollers.engine.Wakeup`; a
verified callback, received by a receiver in this process or from Prefect's event
stream, is delivered here and wakes it. A callback for a job no wait has registered
yet (it arrived before the submit response, or between a retried task's runs) is
kept for a while and wakes the wait as soon as it registers: none is lost. It is
kept under its job *and* its token's nonce, so another job's callback naming the
same job cannot displace it. One callback delivered twice (directly and through the
event stream, or duplicated by the provider) wakes a wait once.

A callback wakes a wait; it ends one only with a status the wait trusts: its block
trusts signed callbacks (it registers with the block's attestation key) and the
receiver attested the status with that key. Anyone can write an event; no one
without the block's webhook secret can attest one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from prefect_pollers.engine import JobRef, JobStatus, Wakeup

KEEP_S = 900.0
"""How long a callback for a job no wait has registered is kept (seconds)."""
MAX_KEPT = 50_000
"""The most such callbacks kept (the oldest go first)."""
MAX_SEEN = 100_000
"""How many delivery ids are remembered to drop duplicates."""

DeliveryResult = Literal["woken", "kept", "duplicate", "mismatched"]

_Kept = tuple[str, str, str | None]  # provider, job id, nonce


@dataclass(frozen=True)
class Delivery:
    """One verified callback, as the receiver passes it on.

    Attributes:
        provider: The provider's short name.
        job_id: The job the callback names.
        delivery_id: Unique per callback (the ``webhook-id``, or a digest).
        nonce: The capability token's nonce (None for a signed callback).
        status: The callback's own status, when the receiver's block trusts signed
            callbacks; a wait takes it only when :attr:`attestation` is valid under
            the wait's own key (:meth:`trusted_status`).
        attestation: The receiver's MAC of this callback (see :meth:`attest`).
    """

    provider: str
    job_id: str
    delivery_id: str
    nonce: str | None = None
    status: JobStatus | None = None
    attestation: str | None = field(default=None, repr=False)

    def _mac(self, key: bytes) -> str:
        claim = {
            "provider": self.provider,
            "job_id": self.job_id,
            "delivery_id": self.delivery_id,
            "nonce": self.nonce,
            "status": self.status.model_dump(mode="json") if self.status else None,
        }
        message = json.dumps(claim, sort_keys=True, separators=(",", ":")).encode()
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def attest(self, key: bytes) -> Delivery:
        """This callback with the receiver's attestation under ``key``.

        Args:
            key: The block's attestation key
                (:meth:`~prefect_pollers.providers.callbacks.CallbackCredentials.attestation_key`).
        """
        return Delivery(
            self.provider, self.job_id, self.delivery_id, self.nonce, self.status, self._mac(key)
        )

    def trusted_status(self, key: bytes | None) -> JobStatus | None:
        """The status a wait with attestation key ``key`` may end on (None: confirm by a poll)."""
        if key is None or self.status is None or self.attestation is None:
            return None
        return self.status if hmac.compare_digest(self._mac(key), self.attestation) else None


@dataclass(frozen=True)
class _Wait:
    nonce: str | None
    key: bytes | None = field(repr=False)
    wakeup: Wakeup


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
        self._waits: dict[tuple[str, str], list[_Wait]] = {}
        self._kept: OrderedDict[_Kept, tuple[float, Delivery]] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()

    def register(self, ref: JobRef, trust: bytes | None = None) -> Wakeup:
        """A wake-up for ``ref``'s wait; already set if its callback came first.

        Call it on the wait's event loop.

        Args:
            ref: The job.
            trust: The attestation key of its block when the block trusts signed
                callbacks: the wait then ends on a status attested with it.
        """
        wait = _Wait(ref.callback.nonce if ref.callback else None, trust, Wakeup())
        with self._lock:
            self._waits.setdefault((ref.provider, ref.job_id), []).append(wait)
            kept = self._kept.pop((ref.provider, ref.job_id, wait.nonce), None)
        if kept is not None:
            wait.wakeup.set(kept[1].trusted_status(trust))
        return wait.wakeup

    def unregister(self, ref: JobRef, wakeup: Wakeup) -> None:
        """Forget a wait (its job ended, or the wait stopped)."""
        key = (ref.provider, ref.job_id)
        with self._lock:
            waits = [wait for wait in self._waits.get(key, []) if wait.wakeup is not wakeup]
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
                self._keep((*key, delivery.nonce), delivery)
                return "kept"
        # A capability-URL wait is woken only by its own token; a signed-scheme wait
        # by any verified callback that names its job.
        woken = [wait for wait in waits if wait.nonce is None or wait.nonce == delivery.nonce]
        for wait in woken:
            wait.wakeup.set(delivery.trusted_status(wait.key))
        return "woken" if woken else "mismatched"

    def waiting(self) -> int:
        """How many jobs have a wait registered."""
        with self._lock:
            return len(self._waits)

    def _keep(self, key: _Kept, delivery: Delivery) -> None:
        now = self._now()
        self._kept[key] = (now, delivery)
        self._kept.move_to_end(key)
        while self._kept and (
            len(self._kept) > self._max_kept
            or next(iter(self._kept.values()))[0] < now - self._keep_s
        ):
            self._kept.popitem(last=False)


INBOX = CallbackInbox()
"""The inbox of this process: receivers deliver here, waits register here."""
