"""Cancel the remote jobs of a cancelled flow run: the ``cancel_remote_jobs`` hook.

Attach it to a flow with ``@flow(on_cancellation=[cancel_remote_jobs])`` (every
example flow does). Prefect runs ``on_cancellation`` hooks only when a flow run is
cancelled (``prefect flow-run cancel``, the UI's Cancel button), never when its
process crashes or a worker restarts, so a restart never cancels anything.

The hook finds the jobs the run was still waiting on in two places: this
process's registry of waits in flight (when the hook runs in the flow's own
process), else the run's ``prefect-pollers.job.*`` events (when a worker runs the
hook in another process): the ``submitted`` event names the saved credentials
block, later events tell which jobs already ended. Each job is cancelled where
its provider has a cancel endpoint; otherwise the log says it keeps running and
gives its id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.logging import get_logger
from prefect.runtime import flow_run as current_flow_run

from prefect_pollers.client import shared_client
from prefect_pollers.engine import JobRef, JobState, PollerError
from prefect_pollers.events.jobs import EVENT_PREFIX
from prefect_pollers.providers.base import JobApiCredentials

# flow run id -> (provider, job id) -> the credentials and ref of a wait in flight
_in_flight: dict[str, dict[tuple[str, str], tuple[JobApiCredentials[Any], JobRef]]] = {}

_TERMINAL_EVENTS = {f"{EVENT_PREFIX}.{state.value}" for state in JobState if state.terminal}


@contextlib.contextmanager
def tracked(credentials: JobApiCredentials[Any], ref: JobRef) -> Iterator[None]:
    """Register a wait in flight for the current flow run while it runs.

    The registration ends when the wait ends with an outcome (a result or any
    error), not when it is interrupted (cancelled, or a signal): an interrupted
    wait is what a cancellation hook must find.
    """
    run_id = current_flow_run.get_id()
    if run_id is None:
        yield
        return
    jobs = _in_flight.setdefault(run_id, {})
    jobs[(ref.provider, ref.job_id)] = (credentials, ref)
    interrupted = False
    try:
        yield
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        raise
    finally:
        if not interrupted:
            _forget(run_id, ref)


def _forget(run_id: str, ref: JobRef) -> None:
    jobs = _in_flight.get(run_id, {})
    jobs.pop((ref.provider, ref.job_id), None)
    if not jobs:
        _in_flight.pop(run_id, None)


async def _jobs_from_events(run_id: str) -> list[tuple[JobApiCredentials[Any] | None, JobRef]]:
    """The jobs a run submitted and did not see end, from its events."""
    submitted: dict[str, Any] = {}
    ended: set[str] = set()
    event_filter = EventFilter(
        event=EventNameFilter(prefix=[f"{EVENT_PREFIX}."]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
    )
    async with get_client() as client:
        page = await client.read_events(filter=event_filter, limit=50)
        while True:
            for event in page.events:
                resource_id = event.resource.id
                if event.event == f"{EVENT_PREFIX}.submitted":
                    submitted[resource_id] = event.payload
                elif event.event in _TERMINAL_EVENTS:
                    ended.add(resource_id)
            if not page.next_page:
                break
            page = await client.read_events_page(str(page.next_page))
    jobs: list[tuple[JobApiCredentials[Any] | None, JobRef]] = []
    for resource_id, payload in submitted.items():
        if resource_id in ended:
            continue
        ref = JobRef(
            provider=payload["provider"],
            job_id=payload["job_id"],
            context=payload.get("context") or {},
        )
        credentials = None
        if payload.get("block_document_name"):
            block = await Block.aload(
                f"{payload['block_type_slug']}/{payload['block_document_name']}"
            )
            credentials = block if isinstance(block, JobApiCredentials) else None
        jobs.append((credentials, ref))
    return jobs


async def cancel_remote_jobs(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation`` hook: cancel the remote jobs the cancelled run was waiting on."""
    logger = get_logger("prefect_pollers.ops.cancellation")
    run_id = str(flow_run.id)
    local = _in_flight.pop(run_id, {})
    jobs = list(local.values()) if local else await _jobs_from_events(run_id)
    for credentials, ref in jobs:
        label = f"{ref.provider} job {ref.job_id}"
        if credentials is None:
            logger.warning(
                "%s keeps running: its credentials block is not saved, so it "
                "cannot be cancelled from here; cancel it with the provider",
                label,
            )
            continue
        try:
            cancelled = await shared_client(credentials).cancel(ref)
        except PollerError as exc:
            logger.warning("%s: the cancel request failed (%s); it may keep running", label, exc)
            continue
        if cancelled:
            logger.info("%s: cancelled with the provider", label)
        else:
            logger.warning(
                "%s keeps running: %s has no cancel endpoint; its id is %s",
                label,
                ref.provider,
                ref.job_id,
            )
