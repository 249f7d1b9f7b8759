"""Job events that must not be lost while the Prefect API is down: kept until the server has them.

Prefect's events client is best-effort: while the API is unreachable it gives up on
an event after its reconnection attempts and drops it (with an ERROR log). The job
events of this process (``prefect-pollers.job.*``) are kept here as they are emitted;
:func:`reconcile_job_events` (run at the end of every batch) asks the server which
of them it holds and sends the missing ones again, exactly as they were emitted: same
id, time and payload. The server keeps one event per id (its event writer skips an
id it has stored, and its triggers skip an id they have processed), so an event
sent again whose first copy arrives after all is stored and acted on once: a job's
end never fires an automation twice. The events sent again are checked in turn;
the server ignores an id it saw in the last 5 minutes even if it lost that event (a
SQLite Prefect 3.8 server's event persister drops whole flushes after a restart: see
``docs/concepts/failures.md``), so those still missing after ``RESEND_ROUNDS`` are
kept for the next reconciliation, counted (:attr:`EventOutbox.unconfirmed`, and in a
batch's progress artifact) and logged at WARNING in the flow run's log: never
dropped silently.

Every event kept is checked at each reconciliation, the newest included (a batch's
last job ends just before it): one count query per ``CHUNK`` events. An event the
server does not hold yet is checked again every ``RECHECK_S`` until it is old enough
to have been stored (``SETTLE_S``, past the event persister's flush interval): when
nothing went wrong that costs the wait for the server's next flush, and only then is
an event missing and sent again. Each event a reconciliation cannot confirm is named
(its event, job and id) in the WARNING.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.events import Event
from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter
from prefect.events.worker import EventsWorker
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from prefect_pollers.events.outside_run import outside_run

SETTLE_S = 10.0
"""Seconds after which an event sent while the API was up is stored (flush: 5 s)."""
CHUNK = 500
"""Event ids checked per count query."""
MAX_KEPT = 200_000
"""The most events kept (the oldest go first)."""
CHECK_TIMEOUT_S = 120.0
"""How long a reconciliation keeps trying while the API does not answer."""
RESEND_ROUNDS = 3
"""How many times a missing event is sent again (each copy is checked after SETTLE_S)."""
RECHECK_S = 1.0
"""How often an event the server does not hold yet is checked until it is settled."""
NAMED_PER_LINE = 50
"""The most events named in one WARNING line (more take more lines)."""

_log = logging.getLogger("prefect_pollers.events.jobs")


@dataclass(frozen=True)
class _Kept:
    """One event kept, as JSON (a quarter of the memory of the model)."""

    at: float
    id: UUID
    occurred: datetime
    data: bytes

    @classmethod
    def of(cls, event: Event) -> _Kept:
        return cls(time.monotonic(), event.id, event.occurred, event.model_dump_json().encode())


class EventOutbox:
    """The job events this process emitted and has not yet seen stored by the server.

    Args:
        settle_s: How old an event must be for the server to have stored it: one
            it does not hold by then is missing (and is sent again).

    Attributes:
        unconfirmed: Job events the last reconciliation could not confirm on the
            server: still missing after it sent them again, or not checked (the
            API did not answer), or dropped unchecked since the one before (more
            than ``MAX_KEPT`` kept). The ones not dropped are kept for the next.
    """

    def __init__(self, *, settle_s: float = SETTLE_S) -> None:
        self._settle_s = settle_s
        self._lock = threading.Lock()
        self._events: OrderedDict[UUID, _Kept] = OrderedDict()
        self._dropped = 0
        self.unconfirmed = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def add(self, event: Event | None) -> None:
        """Keep ``event`` (as ``emit_event`` returned it) until the server has it.

        It is kept as it was emitted, and a copy is sent again as it was: outside
        the run context, so that it gets no other related resources.
        """
        if event is None:
            return
        kept = _Kept.of(event)
        with self._lock:
            self._events[event.id] = kept
            while len(self._events) > MAX_KEPT:
                self._events.popitem(last=False)
                self._dropped += 1

    async def reconcile(self, *, timeout_s: float = CHECK_TIMEOUT_S) -> int:
        """Send again the kept events the server does not hold; returns how many were sent.

        Raises nothing: the events it cannot confirm (the API stays unreachable
        past ``timeout_s``, or they are still missing after ``RESEND_ROUNDS``) are
        kept for a later call, counted in :attr:`unconfirmed` and logged at WARNING.
        """
        with self._lock:
            kept = list(self._events.values())
            dropped, self._dropped = self._dropped, 0
        logger = _logger()
        if dropped:
            logger.warning(
                "%d job events were dropped unchecked: more than %d were waiting for the "
                "Prefect API to confirm them",
                dropped,
                MAX_KEPT,
            )
        self.unconfirmed = dropped
        if not kept:
            return 0
        try:
            missing = await _not_stored(kept, self._settle_s, timeout_s)
        except _Unreachable as exc:
            self.unconfirmed += len(kept)
            _warn_naming(
                logger,
                f"{len(kept)} job events could not be checked against the Prefect API "
                f"({exc}); kept for the next reconciliation",
                kept,
            )
            return 0
        resent = 0
        for _ in range(RESEND_ROUNDS):
            if not missing:
                break
            worker = EventsWorker.instance()
            for event in missing:
                outside_run(worker.send, Event.model_validate_json(event.data))
            resent += len(missing)
            _warn_naming(
                logger,
                f"{len(missing)} job events the Prefect API had not received (it was "
                "unreachable) were sent again",
                missing,
            )
            await asyncio.sleep(self._settle_s)
            try:
                missing = await _missing(missing, timeout_s)
            except _Unreachable:
                break
        still_missing = {k.id for k in missing}
        self._forget([k for k in kept if k.id not in still_missing])
        if missing:
            self.unconfirmed += len(missing)
            _warn_naming(
                logger,
                f"{len(missing)} job events are still not on the Prefect server after being "
                f"sent again {RESEND_ROUNDS} times (it ignores for 5 minutes an id it saw, "
                "even one it failed to store); kept for this process's next "
                "reconciliation. Job outcomes are not affected",
                missing,
            )
        return resent

    def _forget(self, kept: Sequence[_Kept]) -> None:
        with self._lock:
            for k in kept:
                self._events.pop(k.id, None)


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """The current run's logger (a batch's log), else this module's."""
    try:
        return get_run_logger()
    except MissingContextError:
        return _log


def _warn_naming(
    logger: logging.Logger | logging.LoggerAdapter[Any], what: str, events: Sequence[_Kept]
) -> None:
    """Log ``what`` at WARNING, naming each of ``events`` (its event, job and id)."""
    for start in range(0, len(events), NAMED_PER_LINE):
        part = events[start : start + NAMED_PER_LINE]
        shown = "" if len(events) <= NAMED_PER_LINE else f" ({start + 1}-{start + len(part)})"
        logger.warning("%s%s: %s", what, shown, "; ".join(_name(k) for k in part))


def _name(kept: _Kept) -> str:
    """E.g. ``prefect-pollers.job.succeeded of exona job scan_1 (event 0190...)``."""
    try:
        event = json.loads(kept.data)
        resource = event["resource"]
        job = resource.get("prefect.resource.name") or resource["prefect.resource.id"]
        return f"{event['event']} of {job} (event {kept.id})"
    except (ValueError, KeyError, TypeError):
        return f"event {kept.id}"


class _Unreachable(Exception):
    """The Prefect API did not answer the checks in time."""


async def _not_stored(events: Sequence[_Kept], settle_s: float, timeout_s: float) -> list[_Kept]:
    """The ``events`` the server does not hold once each is ``settle_s`` old.

    All are checked now; those not stored yet are checked again every ``RECHECK_S``
    until they are stored or settled (the server writes events in flushes).
    """
    missing = await _missing(events, timeout_s)
    while True:
        newest = max((k.at for k in missing), default=0.0)
        left = newest + settle_s - time.monotonic()
        if left <= 0:
            return missing
        await asyncio.sleep(min(RECHECK_S, left))
        missing = await _missing(missing, timeout_s)


async def _missing(events: Sequence[_Kept], timeout_s: float) -> list[_Kept]:
    """The ``events`` the server does not hold."""
    deadline = time.monotonic() + timeout_s
    missing: list[_Kept] = []
    for start in range(0, len(events), CHUNK):
        chunk = events[start : start + CHUNK]
        delay = 1.0
        while True:
            try:
                missing += await _missing_in_chunk(chunk)
                break
            except Exception as exc:  # the API is down: try again until the deadline
                if time.monotonic() + delay > deadline:
                    raise _Unreachable(type(exc).__name__) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
    return missing


async def _missing_in_chunk(chunk: Sequence[_Kept]) -> list[_Kept]:
    since = min(event.occurred for event in chunk) - timedelta(minutes=1)
    until = max(event.occurred for event in chunk) + timedelta(minutes=1)
    filter = EventFilter(
        id=EventIDFilter(id=[event.id for event in chunk]),
        occurred=EventOccurredFilter.model_validate({"since": since, "until": until}),
    )
    async with get_client() as client:
        response = await client._client.post(
            "/events/count-by/event", json={"filter": filter.model_dump(mode="json")}
        )
        response.raise_for_status()
        stored = sum(int(row["count"]) for row in response.json())
        if stored >= len(chunk):
            return []
        present: set[UUID] = set()
        page = await client.read_events(filter=filter, limit=50)
        while True:
            present.update(event.id for event in page.events)
            if page.next_page is None:
                break
            page = await client.read_events_page(str(page.next_page))
    return [event for event in chunk if event.id not in present]


OUTBOX = EventOutbox()
"""This process's outbox: every job event emitted by :mod:`prefect_pollers.events.jobs`."""


async def reconcile_job_events() -> int:
    """Send again this process's job events that the Prefect API did not receive.

    Run at the end of every batch; call it at the end of a flow of your own that uses
    ``submit_job``/``wait_for_job`` directly. Returns how many events were sent again.
    """
    return await OUTBOX.reconcile()


def unconfirmed_job_events() -> int:
    """Job events of this process the last reconciliation could not confirm on the server.

    See :attr:`EventOutbox.unconfirmed`; a batch's progress can show it after
    :func:`reconcile_job_events`.
    """
    return OUTBOX.unconfirmed
