"""Webhook delivery: POST a payload to a URL once a job turns terminal.

One background loop serves every pending callback: it wakes every ~50 ms, posts the
ones that are due and exits when none are left, so no timer exists per job.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

import httpx

from prefect_pollers.simulator.jobs import Job


class CallbackSender:
    """Posts each job's payload to its callback URL when the job becomes terminal."""

    def __init__(
        self,
        now: Callable[[], float],
        payload: Callable[[Job], dict[str, Any]],
        delivered: Callable[[Job, bool], None],
        *,
        tick: float = 0.05,
        timeout: float = 5.0,
    ) -> None:
        """Set up an idle sender.

        Args:
            now: The monotonic clock the jobs' end times are read against.
            payload: Builds the JSON body to post for a terminal job.
            delivered: Told, per job, whether the POST got a 2xx answer.
            tick: Real seconds between checks for due callbacks.
            timeout: Real seconds allowed for one POST.
        """
        self._now = now
        self._payload = payload
        self._delivered = delivered
        self._tick = tick
        self._timeout = timeout
        self._due: list[tuple[float, int, Job, str]] = []
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None

    def schedule(self, job: Job, url: str) -> None:
        """Post to ``url`` when ``job`` ends (never, for a job that never finishes)."""
        if math.isinf(job.end):
            return
        heapq.heappush(self._due, (job.end, next(self._order), job, url))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

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

    async def _run(self) -> None:
        """Deliver due callbacks until none are pending."""
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            while self._due:
                now = self._now()
                batch = []
                while self._due and self._due[0][0] <= now:
                    _, _, job, url = heapq.heappop(self._due)
                    batch.append(self._deliver(client, job, url))
                if batch:
                    await asyncio.gather(*batch)
                else:
                    await asyncio.sleep(self._tick)

    async def _deliver(self, client: httpx.AsyncClient, job: Job, url: str) -> None:
        """Post one callback and report whether it was accepted."""
        try:
            response = await client.post(url, json=self._payload(job))
        except httpx.HTTPError:
            self._delivered(job, False)
        else:
            self._delivered(job, response.is_success)
