"""The progress artifact of provider batches: each batch's request counts as they move.

A provider batch reports counts of its requests on every status (OpenAI: ``total``,
``completed``, ``failed``; Anthropic: ``processing``, ``succeeded``, ``errored``,
``canceled``, ``expired``). Each status a wait sees updates the artifact when a count
changed: the progress is the requests finished over all batches, the description
names each batch's counts. Best effort: it never fails the batch.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

from prefect_pollers.events.reporting import best_effort

UNFINISHED = frozenset({"total", "processing"})
"""Count names that are not requests finished."""


def finished(counts: dict[str, object]) -> int:
    """The requests a batch's counts say are finished (every count but ``UNFINISHED``)."""
    return sum(
        value
        for name, value in counts.items()
        if name not in UNFINISHED and isinstance(value, int) and not isinstance(value, bool)
    )


class ProviderBatchProgress:
    """One artifact for the provider batches of a run.

    Args:
        title: Shown in the artifact's description.
        total: The requests sent in all the batches.
    """

    def __init__(self, title: str, total: int) -> None:
        self.title, self.total = title, total
        self.counts: dict[str, dict[str, object]] = {}
        self.artifact_id: UUID | None = None
        self.lock = asyncio.Lock()

    @property
    def _what(self) -> str:
        return f"the progress artifact of {self.title!r}"

    async def start(self) -> None:
        """Create the artifact at 0% (none if the API refuses: the batch goes on)."""
        with best_effort(self._what):
            self.artifact_id = await acreate_progress_artifact(
                progress=0.0, description=self.description()
            )

    def description(self) -> str:
        """The title, the requests finished, and each batch's counts."""
        done = sum(finished(counts) for counts in self.counts.values())
        parts = [f"{self.title}: {done} of {self.total} requests finished"]
        for batch_id, counts in self.counts.items():
            shown = ", ".join(f"{name} {value}" for name, value in counts.items())
            parts.append(f"{batch_id}: {shown}")
        return "; ".join(parts)

    async def update(self, batch_id: str, counts: dict[str, object]) -> None:
        """Record a batch's counts; update the artifact if they changed."""
        if self.counts.get(batch_id) == counts:
            return
        self.counts[batch_id] = dict(counts)
        if self.artifact_id is None:
            return
        async with self.lock:
            done = sum(finished(each) for each in self.counts.values())
            with best_effort(self._what):
                await aupdate_progress_artifact(
                    self.artifact_id,
                    progress=100.0 * min(done, self.total) / max(self.total, 1),
                    description=self.description(),
                )
