"""Callbacks received by another process reach this one's waits through Prefect's events.

The receiver emits ``prefect-pollers.job.callback`` related to the flow run named in
the callback URL. Each process that waits on callbacks holds one subscription to
Prefect's event stream per flow run it waits for (per provider outside a flow run),
opened when its first callback job is submitted or waited for and closed a while
after its last wait ends, and delivers what it receives to the process's
:data:`~prefect_pollers.webhooks.inbox.INBOX`. Prefect backfills a minute of past
events on connect, and the inbox keeps callbacks that come before their wait.
Prefect's events are best-effort: a callback event that is lost costs latency, never
the job, since the wait still polls at the policy's safety cadence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from prefect.events import Event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventRelatedFilter,
    EventResourceFilter,
)
from pydantic import BaseModel, ValidationError

from prefect_pollers.engine import JobRef, JobStatus, Wakeup
from prefect_pollers.events.jobs import CALLBACK_EVENT, EVENT_PREFIX
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.callback_urls import NO_FLOW_RUN, flow_run_segment
from prefect_pollers.providers.callbacks import CallbackCredentials
from prefect_pollers.webhooks.inbox import INBOX, CallbackInbox, Delivery

CONNECT_TIMEOUT_S = 10.0
"""How long a first wait waits for the event stream to connect before going on."""
LINGER_S = 30.0
"""How long a subscription stays open after its last wait ends (batches come and go)."""
RECONNECT_AFTER_S = 60.0
"""After the event stream failed, how long before a new wait tries it again."""

_log = logging.getLogger("prefect_pollers.webhooks")


def delivery_from_event(event: Event) -> Delivery | None:
    """The callback a ``prefect-pollers.job.callback`` event carries (None if malformed).

    Its status and attestation are kept as they came: a wait ends on the status
    only if the attestation is valid under its own block's key
    (:meth:`~prefect_pollers.webhooks.inbox.Delivery.trusted_status`).
    """
    payload: dict[str, Any] = event.payload
    provider, job_id = payload.get("provider"), payload.get("job_id")
    delivery_id = payload.get("delivery_id")
    if not all(isinstance(v, str) and v for v in (provider, job_id, delivery_id)):
        return None
    nonce, status = payload.get("nonce"), payload.get("status")
    attestation = payload.get("attestation")
    try:
        parsed = JobStatus.model_validate(status) if isinstance(status, dict) else None
    except ValidationError:
        parsed = None
    return Delivery(
        provider=str(provider),
        job_id=str(job_id),
        delivery_id=str(delivery_id),
        nonce=nonce if isinstance(nonce, str) else None,
        status=parsed,
        attestation=attestation if isinstance(attestation, str) else None,
    )


def callback_filter(provider: str, flow_run: str) -> EventFilter:
    """The events that carry callbacks for ``flow_run``'s jobs (or ``provider``'s)."""
    if flow_run != NO_FLOW_RUN:
        return EventFilter(
            event=EventNameFilter(name=[CALLBACK_EVENT]),
            related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run}"]),
        )
    return EventFilter(
        event=EventNameFilter(name=[CALLBACK_EVENT]),
        resource=EventResourceFilter(id_prefix=[f"{EVENT_PREFIX}.{provider}."]),
    )


class CallbackSubscription:
    """One subscription to the event stream, shared by the waits of one flow run.

    Args:
        provider: The provider (it scopes the subscription outside a flow run).
        flow_run: The flow-run segment of the jobs' callback URLs.
        inbox: Where received callbacks are delivered.
    """

    def __init__(self, provider: str, flow_run: str, inbox: CallbackInbox = INBOX) -> None:
        self._filter = callback_filter(provider, flow_run)
        self._inbox = inbox
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._linger: asyncio.TimerHandle | None = None
        self._failed_at: float | None = None
        self.received = 0
        """Callback events received."""

    async def acquire(self) -> None:
        """Count one more user; open the stream if closed and wait until it is connected."""
        self._users += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        loop = asyncio.get_running_loop()
        failed_lately = (
            self._failed_at is not None and loop.time() - self._failed_at < RECONNECT_AFTER_S
        )
        if (self._task is None or self._task.done()) and not failed_lately:
            self._ready.clear()
            self._task = loop.create_task(self._run())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), CONNECT_TIMEOUT_S)

    def release(self) -> None:
        """Count one user less; close the stream ``LINGER_S`` after the last one."""
        self._users -= 1
        if self._users <= 0 and self._task is not None and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER_S, self.close)

    def close(self) -> None:
        """Close the stream now."""
        self._linger = None
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            async with get_events_subscriber(
                filter=self._filter, reconnect_on_clean_close=True
            ) as subscriber:
                self._ready.set()
                async for event in subscriber:
                    delivery = delivery_from_event(event)
                    if delivery is not None:
                        self.received += 1
                        self._inbox.deliver(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed_at = asyncio.get_running_loop().time()
            _log.warning(
                "callbacks from other processes are not received (Prefect's event stream: "
                "%s); waits go on polling at their safety cadence, retried in %g s",
                type(exc).__name__,
                RECONNECT_AFTER_S,
            )
        finally:
            self._ready.set()


_subscriptions: dict[tuple[asyncio.AbstractEventLoop, int, str, str], CallbackSubscription] = {}


def subscription_for(
    provider: str, flow_run: str, inbox: CallbackInbox = INBOX
) -> CallbackSubscription:
    """The subscription of ``flow_run``'s callbacks into ``inbox`` on the running loop."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _subscriptions if key[0].is_closed()]:
        del _subscriptions[key]
    key = (loop, id(inbox), provider if flow_run == NO_FLOW_RUN else "", flow_run)
    subscription = _subscriptions.get(key)
    if subscription is None:
        subscription = _subscriptions[key] = CallbackSubscription(provider, flow_run, inbox)
    return subscription


@contextlib.asynccontextmanager
async def subscribed(
    provider: str, flow_run: str, inbox: CallbackInbox = INBOX
) -> AsyncIterator[CallbackSubscription]:
    """Hold the callback subscription of ``flow_run`` open for the block."""
    subscription = subscription_for(provider, flow_run, inbox)
    await subscription.acquire()
    try:
        yield subscription
    finally:
        subscription.release()


@contextlib.asynccontextmanager
async def callback_wakeup(
    ref: JobRef,
    inbox: CallbackInbox = INBOX,
    *,
    credentials: JobApiCredentials[Any] | None = None,
) -> AsyncIterator[Wakeup | None]:
    """The wake-up of ``ref``'s wait while it runs (None when it has no callback).

    The job is registered in the inbox (a callback that came first wakes it at
    once) and its flow run's event subscription is held open. A callback ends the
    wait on its own status only when ``credentials`` trusts signed callbacks and the
    receiver attested the status with its key; otherwise the wait confirms by a poll.
    """
    if ref.callback is None:
        yield None
        return
    trust = credentials.attestation_key() if isinstance(credentials, CallbackCredentials) else None
    wakeup = inbox.register(ref, trust)
    try:
        async with subscribed(ref.provider, ref.callback.flow_run, inbox):
            yield wakeup
    finally:
        inbox.unregister(ref, wakeup)


def listening_for_submit(
    credentials: JobApiCredentials[Any], request: BaseModel, flow_run_id: str | None
) -> contextlib.AbstractAsyncContextManager[object]:
    """Hold the event subscription open around a submit whose callback may come at once."""
    if not credentials.wants_callback(request):
        return contextlib.nullcontext()
    spec = credentials.callback_spec()
    # One URL per account: its callbacks name no flow run (as the job's binding says).
    per_account = spec is not None and spec.url_in == "none"
    return subscribed(
        credentials.provider, NO_FLOW_RUN if per_account else flow_run_segment(flow_run_id)
    )
