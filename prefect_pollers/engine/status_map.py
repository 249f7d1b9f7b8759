"""Terminal-state rules as data: which raw provider statuses mean what."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_pollers.engine.models import JobState


class StatusMap(BaseModel):
    """Maps a provider's raw status strings to normalized :class:`JobState` values.

    Matching ignores case. A raw value listed nowhere counts as running and is
    reported as unrecognized, so the wait can log it once at WARNING.

    Attributes:
        succeeded: Raw values meaning the job succeeded.
        failed: Raw values meaning the job failed.
        cancelled: Raw values meaning the job was cancelled.
        expired: Raw values meaning the job expired.
        pending: Known raw values of a job not started yet.
        running: Known raw values of a job in progress.
    """

    model_config = ConfigDict(frozen=True)

    succeeded: frozenset[str] = Field(default_factory=frozenset)
    failed: frozenset[str] = Field(default_factory=frozenset)
    cancelled: frozenset[str] = Field(default_factory=frozenset)
    expired: frozenset[str] = Field(default_factory=frozenset)
    pending: frozenset[str] = Field(default_factory=frozenset)
    running: frozenset[str] = Field(default_factory=frozenset)

    @model_validator(mode="after")
    def _disjoint(self) -> StatusMap:
        seen: dict[str, str] = {}
        for state, values in self._groups():
            for value in values:
                if value in seen and seen[value] != state:
                    raise ValueError(
                        f"status {value!r} is listed as both {seen[value]} and {state}"
                    )
                seen[value] = state
        if not self.succeeded:
            raise ValueError("a status map needs at least one succeeded value")
        return self

    def _groups(self) -> Iterable[tuple[str, frozenset[str]]]:
        for state in ("succeeded", "failed", "cancelled", "expired", "pending", "running"):
            yield state, frozenset(v.lower() for v in getattr(self, state))

    def classify(self, raw: str | None) -> tuple[JobState, bool]:
        """The normalized state of ``raw`` and whether ``raw`` was recognized."""
        if raw is None:
            return JobState.RUNNING, False
        state = _states_of(self).get(str(raw).lower())
        return (JobState.RUNNING, False) if state is None else (state, True)


@functools.lru_cache(maxsize=256)
def _states_of(status_map: StatusMap) -> dict[str, JobState]:
    """Each raw value ``status_map`` knows, lowercased, and its state (once per map's values)."""
    return {value: JobState(state) for state, values in status_map._groups() for value in values}
