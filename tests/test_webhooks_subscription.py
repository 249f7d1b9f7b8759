"""Callback events from other processes: what the subscription does when it cannot connect."""

import logging

from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_pollers.engine import CallbackBinding, JobRef
from prefect_pollers.ops.serving import bind_socket
from prefect_pollers.webhooks.inbox import CallbackInbox
from prefect_pollers.webhooks.subscription import callback_wakeup


async def test_no_event_stream_means_one_warning_and_waits_that_still_work(caplog):
    with bind_socket("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]  # nothing listens there once closed
    inbox = CallbackInbox()
    refs = [
        JobRef(provider="render", job_id=f"j{i}", callback=CallbackBinding(flow_run="-"))
        for i in range(3)
    ]
    with (
        temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}),
        caplog.at_level(logging.WARNING, logger="prefect_pollers.webhooks"),
    ):
        for ref in refs:
            async with callback_wakeup(ref, inbox) as wakeup:
                assert wakeup is not None
                assert not wakeup.is_set()
    warnings = [r for r in caplog.records if "not received" in r.getMessage()]
    assert len(warnings) == 1
    assert inbox.waiting() == 0
