"""Job events on the server: two ``event_resources`` rows each, whatever the run context.

Prefect's events worker relates an event sent inside a run to the run's flow, task
run, tags (and deployment, work queue, work pool): rows on the server. A job's
events relate to its flow run alone, found by the job id and by the flow run.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from prefect import flow, tags
from prefect.client.orchestration import get_client
from prefect.events import Event
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventRelatedFilter,
    EventResourceFilter,
)
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
from sqlalchemy.engine import make_url

from prefect_pollers import ExonaCredentials, run_job
from prefect_pollers.events.jobs import job_resource_id
from prefect_pollers.providers import exona_policy
from tests.constants import SIM_SCALE

pytestmark = pytest.mark.usefixtures("prefect_harness")

POLICY = exona_policy().scaled(SIM_SCALE)
ACME = {"company_name": "Acme AI Ltd", "company_website": "https://acme.ai"}
OTHER = {"company_name": "Other Ltd", "company_website": "https://other.test"}
ROW_BUDGET_PER_JOB = 8


def event_resource_rows(resource_id: str, run_id: str) -> int:
    """Rows of the server's ``event_resources`` table for the run's events on ``resource_id``.

    (The session simulator's seeded ids repeat from test to test: other runs' jobs may
    have had the same id.)
    """
    path = make_url(PREFECT_API_DATABASE_CONNECTION_URL.value()).database
    with sqlite3.connect(str(path)) as database:
        [(rows,)] = database.execute(
            "select count(*) from event_resources where event_id in "
            "(select id from events where resource_id = ? and id in "
            "(select event_id from event_resources where resource_id = ?))",
            (resource_id, f"prefect.flow-run.{run_id}"),
        ).fetchall()
    return int(rows)


async def job_events(resource: str, run_id: str, deadline: float) -> list[Event]:
    """The run's events on ``resource`` once its end is on the server and no more come.

    Found by the job's resource id (as the UI finds them); the session simulator's
    seeded ids repeat from test to test, so only this run's are kept.
    """
    by_job = EventFilter(
        resource=EventResourceFilter(id=[resource]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
    )
    seen: list[Event] | None = None
    async with get_client() as client:
        while True:
            events = (await client.read_events(filter=by_job, limit=50)).events
            ended = any(event.event == "prefect-pollers.job.succeeded" for event in events)
            if ended and seen is not None and len(seen) == len(events):
                return sorted(events, key=lambda event: event.occurred)
            seen = events if ended else None
            assert time.monotonic() < deadline, [event.event for event in events]
            await asyncio.sleep(1.0)


@pytest.mark.slow  # ~10 s: the server's event persister flushes every 5 s
async def test_a_jobs_events_cost_two_rows_each_and_are_found_by_job_and_flow_run(sim):
    def credentials(detail: str) -> ExonaCredentials:
        return ExonaCredentials(
            api_key="sim-key", base_url=sim.base_url("exona"), job_events=detail
        )

    @flow
    async def tagged() -> tuple[list[str], str]:
        with tags("team-a", "nightly"):  # the task runs' tags: related by Prefect's worker
            results = await asyncio.gather(
                run_job(credentials("changes"), ACME, policy=POLICY),
                run_job(credentials("ends"), OTHER, policy=POLICY),
            )
        return [result.scan_id for result in results], str(flow_run.get_id())

    (changes_id, ends_id), run_id = await tagged()
    deadline = time.monotonic() + 30
    changes = await job_events(job_resource_id("exona", changes_id), run_id, deadline)
    ends = await job_events(job_resource_id("exona", ends_id), run_id, deadline)
    by_run = EventFilter(
        event=EventNameFilter(prefix=["prefect-pollers.job."]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
    )
    async with get_client() as client:
        found_by_run = (await client.read_events(filter=by_run, limit=50)).events

    # Each event once (their order on the server is by send time, not by state).
    names = [event.event.rsplit(".", 1)[1] for event in changes]
    assert names.count("submitted") == names.count("succeeded") == 1, names
    assert set(names) == {"submitted", "running", "succeeded"}, names
    assert sorted(event.event.rsplit(".", 1)[1] for event in ends) == ["submitted", "succeeded"]
    [ended] = [event for event in ends if event.event.endswith(".succeeded")]
    assert ended.payload["old_state"] in {"pending", "running"}
    assert {event.id for event in found_by_run} == {event.id for event in changes + ends}
    for event in changes + ends:
        assert [related.id for related in event.related] == [f"prefect.flow-run.{run_id}"]
    rows = event_resource_rows(job_resource_id("exona", changes_id), run_id)
    assert rows == 2 * len(changes) <= ROW_BUDGET_PER_JOB
    assert event_resource_rows(job_resource_id("exona", ends_id), run_id) == 4
