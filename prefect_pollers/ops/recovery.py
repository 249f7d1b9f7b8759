"""Crash recovery for deployment runs, as two Prefect automations.

A worker killed with its flow-run process (a node lost, an OOM kill of the pod) leaves
the flow run ``Running`` for ever: nobody is left to report the crash. Prefect's flow
runs send a heartbeat event every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds
(180 by default, 30 at least), so:

1. **Silent runs are crashed**: a proactive automation marks a flow run ``Crashed``
   when no heartbeat (nor a state that ends or suspends it) has come for
   ``silence_s`` seconds after one did.
2. **Crashed runs are re-run**: a reactive automation moves a ``Crashed`` flow run of
   a deployment back to ``Scheduled`` (Prefect's own "retry" of a run), so a worker
   picks it up again, at most ``max_reruns`` times (it matches the run count of the
   crashed run). The re-run keeps its flow run id, so its submits find the refs the
   crashed run recorded and re-attach to those jobs: nothing is submitted twice.

Both only watch flow runs with one of ``tags`` (by default ``prefect-pollers``, the
tag every deployment of this project carries). :func:`ensure_crash_recovery` creates
or updates them by name, so running it again changes nothing; the command line is
``prefect-pollers recovery install``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.settings import get_current_settings

from prefect_pollers.ops.automations import save_automation

NAME_PREFIX = "prefect-pollers"
SILENT_RUNS = f"{NAME_PREFIX}: crash flow runs whose heartbeats stopped"
CRASHED_RUNS = f"{NAME_PREFIX}: re-run crashed flow runs"
DEFAULT_TAGS = ("prefect-pollers",)
DEFAULT_MAX_RERUNS = 2
MISSED_HEARTBEATS = 3
"""The default silence, in heartbeat periods, before a run is called crashed."""

RUN_EVENT = "prefect.flow-run"
# A run that sends no more heartbeats because it ended, or because it left its process
# on purpose (paused, suspended), is not silent.
NOT_SILENT = {
    f"{RUN_EVENT}.heartbeat",
    *(
        f"{RUN_EVENT}.{name}"
        for name in ("Completed", "Failed", "Cancelled", "Cancelling", "Crashed")
    ),
    *(f"{RUN_EVENT}.{name}" for name in ("Paused", "Suspended", "Scheduled", "AwaitingRetry")),
}


def _tagged(tags: Sequence[str]) -> dict[str, str | list[str]]:
    if not tags:
        raise ValueError("give at least one tag: the automations watch runs with those tags")
    return {
        "prefect.resource.role": "tag",
        "prefect.resource.id": [f"prefect.tag.{t}" for t in tags],
    }


def crash_recovery_automations(
    *,
    tags: Sequence[str] = DEFAULT_TAGS,
    heartbeat_frequency_s: int | None = None,
    silence_s: float | None = None,
    max_reruns: int = DEFAULT_MAX_RERUNS,
) -> list[AutomationCore]:
    """The two automations (silent runs crashed, crashed runs re-run), not yet saved.

    Args:
        tags: Watch only flow runs with one of these tags.
        heartbeat_frequency_s: The workers' ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``; by
            default this process's setting (Prefect's default is 180 s).
        silence_s: Seconds without a heartbeat before a run is crashed; by default
            three heartbeat periods. It must be longer than one period plus the
            longest Prefect API outage you expect (heartbeats sent during an outage
            are lost), or a live run is called crashed.
        max_reruns: Re-run a crashed run while it has started at most this many times
            (a run that crashes every time stops after ``max_reruns`` re-runs; its
            flow's own retries count too). 0 creates no re-run automation.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    frequency = heartbeat_frequency_s or get_current_settings().flows.heartbeat_frequency or 180
    silence = MISSED_HEARTBEATS * frequency if silence_s is None else silence_s
    if silence <= frequency:
        raise ValueError(
            f"silence_s={silence} must be longer than the heartbeat period ({frequency} s), "
            "or every live run would be called crashed"
        )
    if max_reruns < 0:
        raise ValueError(f"max_reruns={max_reruns} must be 0 or more")
    related = _tagged(tags)
    watched = ", ".join(tags)
    silent = AutomationCore(
        name=SILENT_RUNS,
        description=(
            f"Marks a flow run tagged {watched} Crashed when it has sent no heartbeat for "
            f"{silence:g} s (heartbeats every {frequency} s): its process is gone."
        ),
        trigger=EventTrigger(
            match={"prefect.resource.id": f"{RUN_EVENT}.*"},
            match_related=related,
            after={f"{RUN_EVENT}.heartbeat"},
            expect=NOT_SILENT,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silence),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {silence:g} s: the flow-run process is gone.",
            )
        ],
    )
    if max_reruns == 0:
        return [silent]
    rerun = AutomationCore(
        name=CRASHED_RUNS,
        description=(
            f"Schedules a crashed deployment run tagged {watched} again, at most "
            f"{max_reruns} times; the re-run re-attaches to the jobs it submitted."
        ),
        trigger=EventTrigger(
            match={
                "prefect.resource.id": f"{RUN_EVENT}.*",
                # Runs count from 1 as they start; 0 crashed before it started.
                "prefect.run-count": [str(count) for count in range(max_reruns + 1)],
            },
            match_related=related,
            expect={f"{RUN_EVENT}.Crashed"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message="Re-run after a crash; it re-attaches to the jobs it submitted.",
            )
        ],
    )
    return [silent, rerun]


async def ensure_crash_recovery(
    automations: Sequence[AutomationCore] | None = None,
) -> dict[str, UUID]:
    """Create or update the automations by name (idempotent); their ids by name.

    Args:
        automations: What to save; by default :func:`crash_recovery_automations`.
    """
    wanted = list(automations) if automations is not None else crash_recovery_automations()
    saved: dict[str, UUID] = {}
    async with get_client() as client:
        for automation in wanted:
            saved[automation.name] = await save_automation(client, automation)
        if not any(a.name == CRASHED_RUNS for a in wanted):
            for stale in await client.read_automations_by_name(CRASHED_RUNS):
                await client.delete_automation(stale.id)
    return saved
