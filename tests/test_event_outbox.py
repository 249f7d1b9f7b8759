"""Outbox: a lost job event is sent again under its own id; held once, never lost silently."""

from __future__ import annotations

import asyncio
import logging
import uuid
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId
from prefect.events import Event
from prefect.events.filters import EventFilter, EventResourceFilter
from prefect.events.worker import EventsWorker

from prefect_pollers.batch.progress import BatchProgress
from prefect_pollers.events import outbox as event_outbox
from prefect_pollers.events.outbox import EventOutbox

pytestmark = pytest.mark.usefixtures("prefect_harness")
SETTLE_S = 0.5
FLUSH_S = 7.0  # past the event persister's flush interval (5 s by default)


def job_end() -> Event:
    job = uuid.uuid4().hex[:8]
    return Event(
        event="prefect-pollers.job.succeeded",
        resource={"prefect.resource.id": f"prefect-pollers.job.test.{job}"},
        payload={"provider": "test", "job_id": job},
    )


async def stored(event: Event) -> list[Event]:
    """The events the server holds on ``event``'s resource."""
    resource = EventResourceFilter(id=[event.resource.id])
    async with get_client() as client:
        page = await client.read_events(filter=EventFilter(resource=resource), limit=50)
    return list(page.events)


@pytest.mark.slow  # 10 s
async def test_an_end_sent_again_is_held_once_even_when_the_lost_one_arrives_after_all():
    outbox = EventOutbox(settle_s=SETTLE_S)
    end = job_end()
    outbox.add(end)  # emitted while the API was down: not on the server
    await asyncio.sleep(SETTLE_S)
    assert await outbox.reconcile() >= 1
    # The events client sends its own copy late (it had it buffered, unconfirmed).
    EventsWorker.instance().send(end)
    await asyncio.sleep(FLUSH_S)
    held = await stored(end)
    assert [event.id for event in held] == [end.id]
    await outbox.reconcile()  # if the rounds were too quick for the server, now it is held
    assert outbox.unconfirmed == 0 and len(outbox) == 0


class Unreachable:
    def send(self, event: Event) -> None:
        """The API is still down: the events client drops it."""


async def test_events_still_missing_after_the_resends_are_counted_and_kept(monkeypatch, caplog):
    monkeypatch.setattr(EventsWorker, "instance", classmethod(lambda cls: Unreachable()))
    outbox = EventOutbox(settle_s=0.05)
    end = job_end()
    outbox.add(end)
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="prefect_pollers.events.jobs"):
        assert await outbox.reconcile() == event_outbox.RESEND_ROUNDS
    assert outbox.unconfirmed == 1 and len(outbox) == 1  # kept for the next reconciliation
    assert caplog.records[-1].levelno == logging.WARNING
    assert await stored(end) == []


async def test_an_event_emitted_just_before_the_reconciliation_is_checked_too(monkeypatch, caplog):
    # A batch's last job ends just before the batch reconciles: its end event is too
    # young to have been stored, and is checked all the same (issue 31).
    monkeypatch.setattr(EventsWorker, "instance", classmethod(lambda cls: Unreachable()))
    outbox = EventOutbox(settle_s=0.5)
    end = job_end()
    outbox.add(end)  # lost on its way: the server never stores it
    with caplog.at_level(logging.WARNING, logger="prefect_pollers.events"):
        assert await outbox.reconcile() == event_outbox.RESEND_ROUNDS
    assert outbox.unconfirmed == 1 and len(outbox) == 1
    named = caplog.records[-1]
    assert named.levelno == logging.WARNING
    assert f"prefect-pollers.job.succeeded of {end.resource.id} (event {end.id})" in (
        named.getMessage()
    )


@pytest.mark.slow  # up to the event persister's flush interval (5 s)
async def test_an_event_stored_a_moment_after_the_reconciliation_starts_is_not_sent_again():
    outbox = EventOutbox(settle_s=FLUSH_S)
    end = job_end()
    EventsWorker.instance().send(end)
    outbox.add(end)  # sent, not yet written by the server's event persister
    assert await outbox.reconcile() == 0
    assert outbox.unconfirmed == 0 and len(outbox) == 0
    assert [event.id for event in await stored(end)] == [end.id]


async def test_events_dropped_from_a_full_outbox_are_counted(monkeypatch):
    monkeypatch.setattr(event_outbox, "MAX_KEPT", 2)

    async def all_stored(events: object, timeout_s: float) -> list[object]:
        return []

    monkeypatch.setattr(event_outbox, "_missing", all_stored)
    outbox = EventOutbox(settle_s=0.05)
    for _ in range(3):
        outbox.add(job_end())
    await outbox.reconcile()
    assert outbox.unconfirmed == 1 and len(outbox) == 0
    await outbox.reconcile()
    assert outbox.unconfirmed == 0  # counted once, by the reconciliation after the drop


async def test_a_batch_progress_artifact_counts_the_job_events_never_confirmed(monkeypatch):
    monkeypatch.setattr(EventsWorker, "instance", classmethod(lambda cls: Unreachable()))
    monkeypatch.setattr(event_outbox, "OUTBOX", EventOutbox(settle_s=0.05))

    @flow
    async def batch() -> UUID | None:
        progress = BatchProgress("scans", 2)
        await progress.start()
        await progress.finished(2)
        await progress.settle_events()  # nothing kept: the description stays
        event_outbox.OUTBOX.add(job_end())
        await asyncio.sleep(0.05)
        await progress.settle_events()
        return progress.artifact_id

    artifact_id = await batch()
    assert artifact_id is not None
    only = ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id]))
    async with get_client() as client:
        [artifact] = await client.read_artifacts(artifact_filter=only)
    assert artifact.data == 100.0
    assert artifact.description == (
        "scans: 2 of 2 jobs finished; 1 job events not confirmed on the Prefect server "
        "(see the run's log)"
    )
