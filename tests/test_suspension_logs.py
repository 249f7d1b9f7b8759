"""What a run's log in the Prefect UI says when it suspends, and when it fails.

Read from the Prefect API (the test server), as the UI shows it: the hand-over's
suspension (:func:`suspend_for_poller`, on a run of a deployment) logs Prefect's
``Finished in state Suspended(...)`` at INFO and no ERROR; a failed run keeps its
ERRORs, even with the suspension's filter armed for it; a suspension Prefect refuses
fails the run with its ERRORs and leaves no filter behind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import Log, StateType
from prefect.exceptions import Pause
from prefect.flow_engine import run_flow_async
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run

from prefect_pollers.durable.suspension import (
    ENGINE_LOGGER,
    SuspendedFinishAtInfo,
    suspend_for_poller,
)

# Slow: each test runs a deployment on the test server (30 s or more on this machine).
pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def ours() -> list[logging.Filter]:
    """The suspension filters on the engine's logger."""
    logger = logging.getLogger(ENGINE_LOGGER)
    return [f for f in logger.filters if isinstance(f, SuspendedFinishAtInfo)]


@pytest.fixture(autouse=True)
def no_filter_left() -> Iterator[None]:
    """Each test leaves no suspension filter on the engine's logger."""
    assert ours() == []
    yield
    left = ours()
    for stale in left:
        logging.getLogger(ENGINE_LOGGER).removeFilter(stale)
    assert left == [], left


@flow
async def suspends_for_the_poller() -> None:
    await suspend_for_poller("suspension-logs-test")


@flow
async def fails_with_the_filter_armed() -> None:
    SuspendedFinishAtInfo(flow_run.get_id() or "").arm()  # as while a suspension is pending
    raise ValueError("the job API said no")


async def logs_of(flow_run_id: UUID) -> list[Log]:
    """Every log of the run the server holds, once this process has sent them."""
    await APILogHandler.aflush()
    run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    logs: list[Log] = []
    async with get_client() as client:
        while page := await client.read_logs(log_filter=run, offset=len(logs), limit=200):
            logs += page
    return logs


def finished(logs: list[Log]) -> list[tuple[int, str]]:
    return [(log.level, log.message) for log in logs if log.message.startswith("Finished in")]


def errors(logs: list[Log]) -> list[str]:
    return [log.message for log in logs if log.level >= logging.ERROR]


async def a_deployment_run(client: PrefectClient, name: str) -> UUID:
    """A flow run of a new deployment of flow ``name`` (Prefect suspends only those)."""
    flow_id = await client.create_flow_from_name(name)
    deployment_id = await client.create_deployment(flow_id=flow_id, name=f"{name}-test")
    return (await client.create_flow_run_from_deployment(deployment_id)).id


async def test_the_suspension_logs_its_finish_at_info_and_no_error() -> None:
    async with get_client() as client:
        flow_run_id = await a_deployment_run(client, suspends_for_the_poller.name)
        with pytest.raises(Pause):
            await run_flow_async(
                suspends_for_the_poller, flow_run=await client.read_flow_run(flow_run_id)
            )
        run = await client.read_flow_run(flow_run_id)
    assert run.state_name == "Suspended", run.state
    logs = await logs_of(flow_run_id)
    assert finished(logs) == [(logging.INFO, "Finished in state Suspended(type=PAUSED)")], logs
    assert errors(logs) == []


async def test_a_failed_run_logs_its_errors_even_with_the_filter_armed() -> None:
    state = await fails_with_the_filter_armed(return_state=True)
    assert state.type == StateType.FAILED, state
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    logs = await logs_of(flow_run_id)
    assert finished(logs) == [
        (
            logging.ERROR,
            "Finished in state Failed('Flow run encountered an exception: "
            "ValueError: the job API said no')",
        )
    ], logs
    assert any("the job API said no" in message for message in errors(logs)), logs
    # The filter is still armed (no suspension came): removed for the fixture's check.
    [armed] = ours()
    logging.getLogger(ENGINE_LOGGER).removeFilter(armed)


async def test_a_suspension_prefect_refuses_fails_the_run_with_its_errors() -> None:
    # Not a deployment's run: Prefect refuses to suspend it, and the run fails.
    state = await suspends_for_the_poller(return_state=True)
    assert state.type == StateType.FAILED, state
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    logs = await logs_of(flow_run_id)
    [(level, message)] = finished(logs)
    assert level == logging.ERROR and message.startswith("Finished in state Failed("), logs
    assert any("cannot be suspended" in message for message in errors(logs)), logs
