"""Prefect events for remote jobs: one when a job is submitted, one per change of state.

Resource id ``prefect-pollers.job.<provider>.<job id>``; event names
``prefect-pollers.job.submitted`` and, on each change of normalized state,
``prefect-pollers.job.<state>`` (pending, running, succeeded, failed, cancelled,
expired), with the old and new state and phase in the payload: build automations
on them. A job stuck in a phase past its policy's ``phase_deadlines`` emits
``prefect-pollers.job.stuck`` (its phase and the limit in the payload) as its wait
ends, before the overall deadline. Each is kept in the
:mod:`~prefect_pollers.events.outbox` until the server is known to hold it. Emitting
is best effort (:mod:`~prefect_pollers.events.reporting`): it never fails a submit or a wait.

Each event relates to one resource only, the job's flow run (found by the job id, as
its resource, and by the flow run). Prefect's events worker would relate an event
emitted inside a run to the run's flow, deployment, work queue, work pool, task run
and tags as well, and its server stores a row per resource of an event: about ten
rows per event in a deployment's run, against two. Job events are emitted outside
the run context (:mod:`~prefect_pollers.events.outside_run`), so the server keeps two.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

from prefect.events import Event, emit_event
from prefect.runtime import flow_run

from prefect_pollers.engine import JobRef, JobStatus, PhaseDeadlineError
from prefect_pollers.events.outbox import OUTBOX
from prefect_pollers.events.outside_run import outside_run
from prefect_pollers.events.reporting import best_effort
from prefect_pollers.providers.base import JobApiCredentials, JobEvents

EVENT_PREFIX = "prefect-pollers.job"
_EVENTS = "the job events"


def job_resource_id(provider: str, job_id: str) -> str:
    """The Prefect event resource id of a remote job, e.g. ``prefect-pollers.job.exona.scan_1``."""
    return f"{EVENT_PREFIX}.{provider}.{job_id}"


def _job_resource(provider: str, job_id: str) -> dict[str, str]:
    return {
        "prefect.resource.id": job_resource_id(provider, job_id),
        "prefect.resource.name": f"{provider} job {job_id}",
        "prefect-pollers.provider": provider,
    }


@functools.cache
def block_type_slug(block_type: type[JobApiCredentials[Any]]) -> str:
    """A block type's slug (Prefect slugifies its name at every call: once is enough)."""
    return block_type.get_block_type_slug()


def announce_submitted(
    credentials: JobApiCredentials[Any], ref: JobRef, *, log_level: int = logging.INFO
) -> None:
    """Log a submitted job and emit its ``prefect-pollers.job.submitted`` event.

    The event names the saved credentials block, if any, so that a cancellation
    hook in another process can find the job and its credentials. Logged to the
    run's log, or outside a run (``PollerJob.trigger`` in a script) to the block's.
    """
    credentials.logger.log(
        log_level,
        "submitted %s job %s%s",
        ref.provider,
        ref.job_id,
        " (already terminal: no poll needed)" if ref.submitted_status else "",
    )
    with best_effort(_EVENTS):
        OUTBOX.add(
            emit_job_event(
                f"{EVENT_PREFIX}.submitted",
                ref.provider,
                ref.job_id,
                {
                    "provider": ref.provider,
                    "job_id": ref.job_id,
                    "idempotency_key": ref.idempotency_key,
                    "context": ref.context,
                    "block_type_slug": block_type_slug(type(credentials)),
                    "block_document_name": credentials._block_document_name,
                },
            )
        )


def related_flow_run(flow_run_id: str | None) -> list[dict[str, str]]:
    """The related-resources list of an event about ``flow_run_id`` (empty for None)."""
    if not flow_run_id:
        return []
    return [
        {
            "prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
            "prefect.resource.role": "flow-run",
        }
    ]


def emit_job_event(
    event: str,
    provider: str,
    job_id: str,
    payload: dict[str, Any],
    *,
    flow_run_id: str | None = None,
) -> Event | None:
    """Emit ``event`` on a job's resource, related to its flow run alone (see the module).

    Args:
        event: The event's name.
        provider: The job's provider.
        job_id: The job's id.
        payload: The event's payload.
        flow_run_id: The flow run it relates to; by default the current one (none
            outside a run).

    Returns:
        The event, as ``emit_event`` returns it.
    """
    return outside_run(
        emit_event,
        event=event,
        resource=_job_resource(provider, job_id),
        related=related_flow_run(flow_run_id or flow_run.get_id()),
        payload=payload,
    )


def emit_state_change(
    old: JobStatus | None,
    new: JobStatus,
    provider: str,
    *,
    flow_run_id: str | None = None,
    detail: JobEvents = "changes",
) -> None:
    """Emit ``prefect-pollers.job.<new state>`` when a job's normalized state changes.

    A change of phase alone (e.g. Twyn's PROCESSING_CONFIG to PROCESSING_SIMULATION,
    both running) is logged but emits no event; the phase is in every payload.
    ``flow_run_id`` relates it to a flow run other than the current one (the
    poller service waits for suspended runs' jobs). With ``detail="ends"`` only a
    change to a terminal state emits (its payload names the state before it).
    """
    if old is not None and old.state is new.state:
        return
    if detail == "ends" and not new.state.terminal:
        return
    with best_effort(_EVENTS):
        OUTBOX.add(
            emit_job_event(
                f"{EVENT_PREFIX}.{new.state.value}",
                provider,
                new.job_id,
                {
                    "provider": provider,
                    "job_id": new.job_id,
                    "old_state": old.state.value if old else None,
                    "new_state": new.state.value,
                    "old_phase": old.phase if old else None,
                    "new_phase": new.phase,
                    "raw_status": new.raw_status,
                    "error_code": new.error_code,
                    "error_message": new.error_message,
                },
                flow_run_id=flow_run_id,
            )
        )


CALLBACK_EVENT = f"{EVENT_PREFIX}.callback"
"""The event a webhook receiver emits for each verified callback."""


def emit_callback(
    *,
    provider: str,
    job_id: str,
    flow_run: str | None,
    delivery_id: str,
    nonce: str | None,
    status: JobStatus | None,
    attestation: str | None = None,
) -> None:
    """Emit ``prefect-pollers.job.callback`` for a verified callback.

    The event is on the job's resource and related to the flow run named in the
    callback URL, so the waiting process (subscribed to its flow run's callbacks)
    gets it. It carries the token's nonce (not a secret) and, for blocks that trust
    signed callbacks, the callback's status with the receiver's attestation (a MAC
    under a key derived from the webhook secret: a wait ends on no status without
    it); never the token, the secret or a signature.
    """
    with best_effort(_EVENTS):
        emit_job_event(
            CALLBACK_EVENT,
            provider,
            job_id,
            {
                "provider": provider,
                "job_id": job_id,
                "delivery_id": delivery_id,
                "nonce": nonce,
                "status": status.model_dump(mode="json") if status is not None else None,
                "attestation": attestation,
            },
            flow_run_id=flow_run,
        )


@contextlib.contextmanager
def announcing_stuck(provider: str, *, flow_run_id: str | None = None) -> Iterator[None]:
    """Emit ``prefect-pollers.job.stuck`` when the wait inside ends on a phase deadline."""
    try:
        yield
    except PhaseDeadlineError as exc:
        status = exc.last_status
        with best_effort(_EVENTS):
            OUTBOX.add(
                emit_job_event(
                    f"{EVENT_PREFIX}.stuck",
                    provider,
                    exc.job_id or "",
                    {
                        "provider": provider,
                        "job_id": exc.job_id,
                        "phase": exc.phase,
                        "phase_deadline_s": exc.limit,
                        "state": status.state.value if status else None,
                        "raw_status": status.raw_status if status else None,
                    },
                    flow_run_id=flow_run_id,
                )
            )
        raise
