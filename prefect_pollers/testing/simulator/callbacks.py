"""Webhook delivery: POST a payload to a URL once a job turns terminal, with faults.

One background loop serves every pending callback: it wakes every ~10 ms, posts the
ones that are due and exits when none are left, so no timer exists per job. With a
``callback_secret`` each callback is signed (Standard Webhooks by default; GitHub,
Stripe or fal's Ed25519, which needs no secret, per ``callback_signing``: see
:mod:`~prefect_pollers.testing.simulator.signing`). ``callback_faults`` inject what
real webhook senders do: lose, duplicate, delay, reorder, send before the submit
response, forge, replay.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import httpx

from prefect_pollers.testing.simulator.config import CallbackFaultKind
from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Provider
from prefect_pollers.testing.simulator.signing import SigningKeys, forge, sign

if TYPE_CHECKING:
    from prefect_pollers.testing.simulator.config import SimulatorConfig


@dataclass(order=True)
class _Post:
    """One POST to make at ``due`` (real monotonic seconds)."""

    due: float
    order: int
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    headers: dict[str, str] = field(compare=False)
    job: Job | None = field(compare=False, default=None)
    """The job whose terminal callback this is (None for extra, faulty posts)."""


class CallbackSender:
    """Posts each job's payload to its callback URL when the job becomes terminal."""

    def __init__(
        self,
        now: Callable[[], float],
        config: Callable[[], SimulatorConfig],
        payload: Callable[[Job, float | None], dict[str, Any]],
        delivered: Callable[[Job, bool], None],
        *,
        provider: str,
        keys: Callable[[], SigningKeys],
        seed: str,
        tick: float = 0.01,
        timeout: float = 5.0,
    ) -> None:
        """Set up an idle sender.

        Args:
            now: The monotonic clock the jobs' end times are read against.
            config: The live simulator configuration (secret, faults, time scale).
            payload: Builds the JSON body to post for a job at a time (None: its end).
            delivered: Told, per job, whether its terminal POST got a 2xx answer.
            provider: The name of the provider whose callbacks these are (its signing).
            keys: The simulator's live Ed25519 keys.
            seed: Seeds the fault draws.
            tick: Real seconds between checks for due callbacks.
            timeout: Real seconds allowed for one POST.
        """
        self._now = now
        self._config = config
        self._payload = payload
        self._delivered = delivered
        self._provider = provider
        self._keys = keys
        self._last: tuple[str, datetime] | None = None
        # Message ids are drawn from the seeded generator, but a sender made after a
        # reset must not repeat its predecessor's: a receiver's replay memory outlives it.
        self._salt = uuid.uuid4().hex[:12]
        self._rng = random.Random(seed)
        self._tick = tick
        self._timeout = timeout
        self._due: list[_Post] = []
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self.faults: Counter[str] = Counter()
        """Callback faults injected, by kind."""
        self.responses: Counter[int] = Counter()
        """HTTP statuses the receiver answered, forged and replayed posts included."""

    def early(self) -> bool:
        """Draw whether the next job's callback comes before its submit response."""
        return self._draw() == "early"

    def schedule(self, job: Job, url: str) -> None:
        """Post to ``url`` when ``job`` ends (never, for a job that never finishes)."""
        if math.isinf(job.end):
            return
        kind = self._draw()
        config = self._config()
        body = json.dumps(self._payload(job, None)).encode()
        real = config.real(config.callback_fault_delay_s)
        if kind == "lost":
            self.faults[kind] += 1
            return
        if kind is not None:
            self.faults[kind] += 1
        first = job.end + (real if kind == "delayed" else 0.0)
        self._push(first, url, body, self._sign(body), job)
        if kind == "duplicated":
            self._push(first, url, body, self._sign(body, again=True))
        elif kind == "replayed":
            self._push(first + real, url, body, self._sign(body, again=True))
        elif kind == "forged":
            self._push(first, *self._forge(url, body))
        elif kind == "out_of_order":
            stale = json.dumps(self._payload(job, job.created)).encode()
            self._push(first + min(real, config.real(1.0)), url, stale, self._sign(stale))

    def unschedule(self, job: Job) -> None:
        """Drop ``job``'s pending callbacks (its end moved: schedule it again)."""
        self._due = [post for post in self._due if post.job is not job]
        heapq.heapify(self._due)

    async def post_now(self, job: Job, url: str) -> None:
        """Post ``job``'s callback at once (the ``early`` fault: before the submit answer)."""
        body = json.dumps(self._payload(job, None)).encode()
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            await self._deliver(client, _Post(0.0, 0, url, body, self._sign(body), job))

    def cancel(self) -> None:
        """Drop pending callbacks and stop the loop."""
        self._due.clear()
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        """Stop the loop and wait until it has stopped."""
        self.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _draw(self) -> CallbackFaultKind | None:
        for rule in self._config().callback_faults:
            if self._rng.random() < rule.rate:
                return rule.kind
        return None

    def _push(
        self, due: float, url: str, body: bytes, headers: dict[str, str], job: Job | None = None
    ) -> None:
        heapq.heappush(self._due, _Post(due, next(self._order), url, body, headers, job))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _sign(self, body: bytes, *, again: bool = False) -> dict[str, str]:
        """The signature headers of ``body`` under the provider's signing.

        ``again`` repeats the last message id and timestamp: a replay of the same
        signed request.
        """
        config = self._config()
        if not again or self._last is None:
            msg_id = f"msg_{self._salt}{uuid.UUID(int=self._rng.getrandbits(128)).hex}"
            self._last = (msg_id, datetime.now(timezone.utc))
        msg_id, stamp = self._last
        kind = config.signing(self._provider)
        signed = sign(kind, config.callback_secret, self._keys(), msg_id, stamp, body)
        return {"Content-Type": "application/json", **signed}

    def _forge(self, url: str, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        """A forged copy: a wrong signature, or a token with a changed last character."""
        headers = self._sign(body)
        if forge(self._config().signing(self._provider), headers):
            return url, body, headers
        flipped = url[:-1] + ("A" if url[-1] != "A" else "B")
        return flipped, body, headers

    async def _run(self) -> None:
        """Deliver due callbacks until none are pending."""
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            while self._due:
                now = self._now()
                batch = []
                while self._due and self._due[0].due <= now:
                    batch.append(self._deliver(client, heapq.heappop(self._due)))
                if batch:
                    await asyncio.gather(*batch)
                else:
                    await asyncio.sleep(self._tick)

    async def _deliver(self, client: httpx.AsyncClient, post: _Post) -> None:
        """Post once; report a job's terminal callback as accepted or not."""
        try:
            response = await client.post(post.url, content=post.body, headers=post.headers)
        except httpx.HTTPError:
            accepted = False
        else:
            self.responses[response.status_code] += 1
            accepted = response.is_success
        if post.job is not None:
            self._delivered(post.job, accepted)


class SendsCallbacks(Provider):
    """A simulated provider that posts a job's outcome to its callback URL."""

    callbacks: CallbackSender

    def reset(self) -> None:
        """Also drop pending callbacks and their counters."""
        previous = getattr(self, "callbacks", None)
        if previous is not None:
            previous.cancel()
        super().reset()
        self.callbacks = CallbackSender(
            self.now,
            lambda: self.config,
            self.callback_body,
            self._callback_done,
            provider=self.name,
            keys=lambda: self.state.signing,
            seed=f"{self.config.seed}:{self.name}:callbacks",
        )
        self.callbacks_sent = 0
        self.callbacks_failed = 0

    async def aclose(self) -> None:
        """Stop the callback loop."""
        await self.callbacks.aclose()

    def extra_stats(self) -> dict[str, Any]:
        """Callback delivery counters."""
        return {
            "callbacks_sent": self.callbacks_sent,
            "callbacks_failed": self.callbacks_failed,
            "callback_faults": dict(self.callbacks.faults),
            "callback_responses": {str(k): v for k, v in self.callbacks.responses.items()},
        }

    def callback_body(self, job: Job, at: float | None) -> dict[str, Any]:
        """The JSON a callback for ``job`` carries, as of ``at`` (None: its end)."""
        raise NotImplementedError

    async def call_back(self, job: Job, url: str) -> None:
        """Post ``job``'s outcome to ``url`` when it ends, or at once for an ``early`` fault."""
        if not math.isinf(job.end) and self.callbacks.early():
            job.end_now(self.now(), job.terminal)
            self.callbacks.faults["early"] += 1
            await self.callbacks.post_now(job, url)
        else:
            self.callbacks.schedule(job, url)

    def _callback_done(self, job: Job, accepted: bool) -> None:
        """Count a callback delivery; an accepted one hands over the terminal state."""
        if accepted:
            self.callbacks_sent += 1
            self.stats.record_observed(job, self.now())
        else:
            self.callbacks_failed += 1
