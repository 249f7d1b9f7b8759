"""The crash-recovery automations: what they watch, and saving them idempotently."""

from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture

from prefect_pollers.cli import main
from prefect_pollers.ops.recovery import (
    CRASHED_RUNS,
    SILENT_RUNS,
    crash_recovery_automations,
    ensure_crash_recovery,
)


def test_silent_runs_are_crashed_after_the_silence_and_not_when_they_end_or_suspend():
    silent, _ = crash_recovery_automations(heartbeat_frequency_s=30, tags=["nightly"])
    trigger = silent.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.posture == Posture.Proactive and trigger.threshold == 1
    assert trigger.within == timedelta(seconds=90)  # three missed heartbeats
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Suspended", "Paused")} < (
        trigger.expect
    )
    assert trigger.for_each == {"prefect.resource.id"}
    related = trigger.match_related
    assert not isinstance(related, list)
    assert related.model_dump() == {
        "prefect.resource.role": "tag",
        "prefect.resource.id": ["prefect.tag.nightly"],
    }
    [action] = silent.actions
    assert isinstance(action, ChangeFlowRunState) and action.state == StateType.CRASHED


def test_crashed_runs_are_re_run_until_they_have_started_max_reruns_times():
    _, rerun = crash_recovery_automations(heartbeat_frequency_s=30, max_reruns=2)
    trigger = rerun.trigger
    assert isinstance(trigger, EventTrigger) and trigger.posture == Posture.Reactive
    assert trigger.expect == {"prefect.flow-run.Crashed"}
    assert trigger.match.model_dump()["prefect.run-count"] == ["0", "1", "2"]
    [action] = rerun.actions
    assert isinstance(action, ChangeFlowRunState)
    assert (action.state, action.name) == (StateType.SCHEDULED, "AwaitingRetry")
    assert [a.name for a in crash_recovery_automations(max_reruns=0)] == [SILENT_RUNS]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"heartbeat_frequency_s": 30, "silence_s": 30}, "silence_s=30 must be longer"),
        ({"max_reruns": -1}, "max_reruns=-1"),
        ({"tags": []}, "at least one tag"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        crash_recovery_automations(**arguments)


@pytest.mark.usefixtures("prefect_harness")
async def test_saving_twice_changes_nothing_and_max_reruns_0_removes_the_re_run():
    first = await ensure_crash_recovery(crash_recovery_automations(heartbeat_frequency_s=30))
    again = await ensure_crash_recovery(
        crash_recovery_automations(heartbeat_frequency_s=60, silence_s=200)
    )
    assert again == first and set(first) == {SILENT_RUNS, CRASHED_RUNS}
    async with get_client() as client:
        [silent] = await client.read_automations_by_name(SILENT_RUNS)
        assert isinstance(silent.trigger, EventTrigger)
        assert silent.trigger.within == timedelta(seconds=200)  # updated in place
        [action] = silent.actions  # every field sent, not only those set by hand
        assert isinstance(action, ChangeFlowRunState) and action.state == StateType.CRASHED
        [rerun] = await client.read_automations_by_name(CRASHED_RUNS)
        assert [type(a) for a in rerun.actions] == [ChangeFlowRunState]
        await ensure_crash_recovery(crash_recovery_automations(max_reruns=0))
        assert await client.read_automations_by_name(CRASHED_RUNS) == []
        assert len(await client.read_automations_by_name(SILENT_RUNS)) == 1


@pytest.mark.usefixtures("prefect_harness")
def test_the_command_saves_them_and_names_a_bad_silence(capsys):
    assert main(["recovery", "install", "--heartbeat-frequency", "30", "--silence", "10"]) == 2
    assert "silence_s=10.0 must be longer" in capsys.readouterr().err
    assert main(["recovery", "install", "--heartbeat-frequency", "30", "--tag", "x"]) == 0
    out = capsys.readouterr().out
    assert SILENT_RUNS in out and CRASHED_RUNS in out
