"""A wait as the orchestrator sees it: the one path every wait of a flow or poller takes.

Around the client's wait-then-fetch it adds what makes a wait visible and reachable:
the job's events (related to its flow run), its registration for cancellation hooks,
the ``stuck`` event of a phase deadline, and its callback's wake-up.
"""

from __future__ import annotations

from logging import Logger, LoggerAdapter
from typing import Any

from prefect_pollers.client import JobApiClient, shared_client
from prefect_pollers.engine import JobRef, PollPolicy
from prefect_pollers.engine.wait import StatusHook
from prefect_pollers.events.jobs import announcing_stuck, emit_state_change
from prefect_pollers.ops.cancellation import tracked
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.protocol import ResultT
from prefect_pollers.webhooks.subscription import callback_wakeup


async def observed_wait(
    credentials: JobApiCredentials[ResultT],
    ref: JobRef,
    policy: PollPolicy | None,
    *,
    logger: Logger | LoggerAdapter[Any],
    flow_run_id: str | None = None,
    client: JobApiClient[ResultT] | None = None,
    on_status: StatusHook | None = None,
) -> ResultT:
    """Wait for ``ref`` to end and return its typed result, with its events.

    Args:
        credentials: The provider's credentials block.
        ref: The job.
        policy: The poll policy (the provider's preset if None).
        logger: Where its state changes are logged.
        flow_run_id: The flow run the job's events relate to, for waits outside
            that run (the poller service); inside a flow run Prefect adds it.
        client: The client to poll with (the block's shared client if None).
        on_status: Called with every status seen (e.g. a provider batch's counts).

    Raises:
        PollerError: the typed error of a job that did not succeed.
    """
    with tracked(credentials, ref), announcing_stuck(ref.provider, flow_run_id=flow_run_id):
        async with callback_wakeup(ref, credentials=credentials) as wakeup:
            return await (client or shared_client(credentials)).wait_for_result(
                ref,
                policy,
                logger=logger,
                on_change=lambda old, new: emit_state_change(
                    old, new, ref.provider, flow_run_id=flow_run_id, detail=credentials.job_events
                ),
                wakeup=wakeup,
                on_status=on_status,
            )
