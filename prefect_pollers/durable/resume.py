"""Resuming a suspended flow run once the poller has recorded its jobs' outcomes.

The poller emits ``prefect-pollers.wait.done`` (on the resource
``prefect-pollers.wait.<flow run id>``, related to the flow run); an automation with
a ``resume-flow-run`` action resumes the run it is related to. Prefect drops events
while its API is down, so the poller checks after a grace period and resumes the
run through the API itself if it is still suspended.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.events.actions import ResumeFlowRun
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import NotPausedError, ObjectNotFound
from prefect.flow_runs import aresume_flow_run

from prefect_pollers.events.jobs import related_flow_run
from prefect_pollers.events.reporting import best_effort
from prefect_pollers.ops.automations import save_automation

RESUME_EVENT = "prefect-pollers.wait.done"
RESUME_AUTOMATION = "prefect-pollers: resume flow runs whose handed-over jobs ended"


def wait_resource_id(flow_run_id: str) -> str:
    """The event resource of a flow run's durable wait."""
    return f"prefect-pollers.wait.{flow_run_id}"


def resume_automation() -> AutomationCore:
    """The automation that resumes a flow run on its ``prefect-pollers.wait.done`` event."""
    return AutomationCore(
        name=RESUME_AUTOMATION,
        description=(
            "Resumes a suspended flow run when the prefect-pollers poller service has "
            "recorded the outcome of every job it handed over."
        ),
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect-pollers.wait.*"},
            expect={RESUME_EVENT},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[ResumeFlowRun()],
    )


async def ensure_resume_automation() -> UUID:
    """Create or update the resume automation by name (idempotent); its id."""
    async with get_client() as client:
        return await save_automation(client, resume_automation())


def announce_done(flow_run_id: str, jobs: int) -> None:
    """Emit the event the resume automation acts on (best effort: the API resume follows)."""
    with best_effort("the resume events"):
        emit_event(
            event=RESUME_EVENT,
            resource={
                "prefect.resource.id": wait_resource_id(flow_run_id),
                "prefect.resource.name": f"durable wait of flow run {flow_run_id}",
            },
            related=related_flow_run(flow_run_id),
            payload={"flow_run_id": flow_run_id, "jobs": jobs},
        )


async def resume_directly(flow_run_id: str, pause_keys: set[str]) -> bool:
    """Resume the run through the API if it is still suspended; whether this call did.

    Only a suspension on one of ``pause_keys`` is resumed, not a later one of its own.
    """
    async with get_client() as client:
        try:
            flow_run = await client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return False
    state = flow_run.state
    if state is None or not state.is_paused() or state.state_details.pause_key not in pause_keys:
        return False
    try:
        await aresume_flow_run(UUID(flow_run_id))
    except NotPausedError:
        return False
    return True
