"""The progress artifact of a batch (best effort: it never fails the batch)."""

from __future__ import annotations

import asyncio
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

from prefect_pollers.events.outbox import reconcile_job_events, unconfirmed_job_events
from prefect_pollers.events.reporting import best_effort


class BatchProgress:
    """A batch's progress artifact, updated every ~2% of the jobs.

    Updates go one at a time, each with the latest count, so that concurrent jobs
    finishing cannot land an older count after a newer one. A Prefect API error
    while creating or updating it is logged once (:mod:`~prefect_pollers.events.reporting`)
    and the batch goes on.

    Args:
        title: Shown in the artifact's description.
        total: How many jobs the batch has.
    """

    def __init__(self, title: str, total: int) -> None:
        self.title, self.total, self.done = title, total, 0
        self.artifact_id: UUID | None = None
        self.step = max(1, total // 50)
        self.sent = 0
        self.lock = asyncio.Lock()

    @property
    def _what(self) -> str:
        return f"the progress artifact of {self.title!r}"

    async def start(self) -> None:
        """Create the artifact at 0% (none if the API refuses: the batch goes on)."""
        with best_effort(self._what):
            self.artifact_id = await acreate_progress_artifact(
                progress=0.0, description=f"{self.title}: 0 of {self.total} jobs finished"
            )

    def attach(self, artifact_id: UUID, done: int) -> None:
        """Continue an artifact made before (by this flow run's earlier process)."""
        self.artifact_id, self.done = artifact_id, done

    async def finished_one(self) -> None:
        """Count a finished job; update the artifact when a step is reached."""
        await self.finished(1)

    async def finished(self, count: int) -> None:
        """Count ``count`` finished jobs; update the artifact when a step is reached."""
        before, self.done = self.done, self.done + count
        if before // self.step == self.done // self.step and self.done != self.total:
            return
        async with self.lock:
            done = self.done
            if done <= self.sent or self.artifact_id is None:
                return
            with best_effort(self._what):
                await aupdate_progress_artifact(
                    self.artifact_id,
                    progress=100.0 * done / self.total,
                    description=f"{self.title}: {done} of {self.total} jobs finished",
                )
                self.sent = done

    async def settle_events(self) -> None:
        """Send again the job events the Prefect API missed; show those it never confirmed.

        Runs :func:`~prefect_pollers.events.outbox.reconcile_job_events` (which logs
        what it cannot confirm at WARNING in the run's log) and, if some job events
        stay unconfirmed, says how many in the artifact's description. Never raises.
        """
        with best_effort("the job events"):
            await reconcile_job_events()
        unconfirmed = unconfirmed_job_events()
        if not unconfirmed or self.artifact_id is None:
            return
        async with self.lock:
            with best_effort(self._what):
                await aupdate_progress_artifact(
                    self.artifact_id,
                    progress=100.0 * self.done / self.total,
                    description=(
                        f"{self.title}: {self.done} of {self.total} jobs finished; "
                        f"{unconfirmed} job events not confirmed on the Prefect server "
                        "(see the run's log)"
                    ),
                )
