"""Outcomes written to files as they come, and read back on demand.

A provider batch of 100,000 requests with results of a few kilobytes each has
hundreds of megabytes of results: they are never held in memory. Each provider
batch's outcomes go to a JSONL file, one line per item, written to a temporary file
and renamed into place once whole (a reader never sees half a file). What a run
returns (:class:`OutcomeFiles`) is small: where the files are, the counts, and the
result type to read the results back as.

The files live under Prefect's local storage path (``PREFECT_LOCAL_STORAGE_PATH``,
where Prefect keeps task results by default), in
``prefect-pollers/provider-batches/<flow run or "local">/``.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from pydantic import BaseModel, Field

from prefect_pollers.batch.models import BatchOutcome, Outcome
from prefect_pollers.providers.protocol import JobResult


def outcomes_dir(flow_run_id: str | None) -> Path:
    """Where a run's outcome files go, under Prefect's local storage path."""
    root = Path(PREFECT_LOCAL_STORAGE_PATH.value()).expanduser()
    return root / "prefect-pollers" / "provider-batches" / (flow_run_id or "local")


class OutcomeWriter:
    """Appends outcomes to one file, published whole when the writer closes cleanly.

    Use it as ``with OutcomeWriter(path) as writer``; an exception inside leaves no
    file (the temporary one is removed).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._file: Any = None
        self._temp: str | None = None

    def __enter__(self) -> OutcomeWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, self._temp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        self._file = os.fdopen(descriptor, "w", encoding="utf-8")
        return self

    def write(self, outcome: BatchOutcome[Any]) -> None:
        """Append one outcome."""
        self._file.write(outcome.model_dump_json() + "\n")
        self.counts[outcome.outcome.value] += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._temp is not None
        self._file.close()
        if exc_type is None:
            os.replace(self._temp, self.path)
        else:
            os.unlink(self._temp)


class OutcomeFiles(BaseModel):
    """Every item's outcome, in files, loaded on demand (:meth:`read`).

    Attributes:
        files: The outcome files (JSONL, one line per item).
        counts: How many items ended in each outcome.
        result_type: The result model, as ``module:qualname`` (results are read back
            as it).
        batches: What each provider batch was (id, requests, state, created here).
    """

    files: list[str] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    result_type: str | None = None
    batches: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def total(self) -> int:
        """How many items there are."""
        return sum(self.counts.values())

    def read(self) -> Iterator[BatchOutcome[Any]]:
        """Every outcome, read from the files one at a time."""
        model: type[BatchOutcome[Any]] = BatchOutcome[self._result_model()]  # type: ignore[misc,assignment]
        for name in self.files:
            with open(name, encoding="utf-8") as lines:
                for line in lines:
                    yield model.model_validate_json(line)

    def failures(self, limit: int | None = None) -> list[BatchOutcome[Any]]:
        """The outcomes other than success, the first ``limit`` of them."""
        found = []
        for outcome in self.read():
            if outcome.outcome != Outcome.SUCCEEDED:
                found.append(outcome)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def _result_model(self) -> type[JobResult]:
        if self.result_type is None:
            return JobResult
        module, _, name = self.result_type.partition(":")
        found = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
        if not (isinstance(found, type) and issubclass(found, JobResult)):
            raise TypeError(f"{self.result_type} is not a JobResult model")
        return found
