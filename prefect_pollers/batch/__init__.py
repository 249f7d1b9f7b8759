"""Batches: many jobs with bounded concurrency, one outcome per item, a progress artifact."""

from prefect_pollers.batch.models import BatchItem, BatchOutcome, Outcome
from prefect_pollers.batch.progress import BatchProgress
from prefect_pollers.batch.runner import (
    PER_JOB_LIMIT,
    TaskRuns,
    run_batch,
    run_batch_in_one_task,
)

__all__ = [
    "PER_JOB_LIMIT",
    "BatchItem",
    "BatchOutcome",
    "BatchProgress",
    "Outcome",
    "TaskRuns",
    "run_batch",
    "run_batch_in_one_task",
]
