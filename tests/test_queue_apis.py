"""A queue API as data (issue 29): job URLs the submit answers, callbacks anywhere, results.

- URL templates name fields of the submit response or of the status, are kept in the
  job ref's context (the ledger's rows keep them for a resumed wait), and an absolute
  URL must stay on base_url's origin.
- Fixed headers; the callback URL in a body field, a query parameter, or nowhere.
- After a terminal state: a result URL answering 5xx is retried a few times, seconds
  apart, then ends in ``ResultUnavailableError``; a result body that is not what the
  contract reads ends in ``ContractMismatchError`` at once.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import respx
import standardwebhooks
from pydantic import ValidationError

from prefect_pollers import (
    BadRequestError,
    ContractMismatchError,
    HttpJobApi,
    JobCancelledError,
    JobRef,
    ResultUnavailableError,
)
from prefect_pollers.client import SUBMIT_ATTEMPTS
from prefect_pollers.ledger import Ledger, LedgerSubmitter
from prefect_pollers.ledger.replays import LedgerReplays
from prefect_pollers.testing import VirtualClock, use_clock
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import CallbackInbox

BASE = "https://queue.example.com"
KEY = "SENTINEL-queue-key"
SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="
URLS = {
    "status_url": f"{BASE}/apps/a/requests/r1/status",
    "response_url": f"{BASE}/apps/a/requests/r1",
    "cancel_url": f"{BASE}/apps/a/requests/r1/cancel",
}


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    with use_clock(VirtualClock()) as clock:
        assert isinstance(clock, VirtualClock)
        yield clock


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def queue_api(**fields: Any) -> HttpJobApi:
    declared: dict[str, Any] = {
        "api_name": "queue",
        "base_url": BASE,
        "api_key": KEY,
        "submit_path": "apps/a/sub",
        "job_id_field": "request_id",
        "status_url": "{status_url}",
        "status_field": "error && 'FAILED' || status",
        "succeeded": ["COMPLETED"],
        "failed": ["FAILED"],
        "pending": ["IN_QUEUE"],
        "result_url": "{response_url}",
        "cancel_method": "PUT",
        "cancel_url": "{cancel_url}",
        "policy": {"interval": 2, "deadline": 600},
    }
    return HttpJobApi.model_validate({**declared, **fields})


def submitted(router: respx.MockRouter, **answer: Any) -> respx.Route:
    return router.post("/apps/a/sub").mock(
        return_value=httpx.Response(200, json={"request_id": "r1", **URLS, **answer})
    )


def completed(router: respx.MockRouter) -> respx.Route:
    return router.get("/apps/a/requests/r1/status").mock(
        return_value=httpx.Response(200, json={"status": "COMPLETED"})
    )


async def test_job_urls_come_from_the_submit_answer_and_a_resumed_wait_has_them(clock, router):
    submit = submitted(router)
    status = router.get("/apps/a/requests/r1/status").mock(
        side_effect=[
            httpx.Response(200, json={"status": "IN_QUEUE", "queue_position": 3}),
            httpx.Response(200, json={"status": "COMPLETED"}),
        ]
    )
    result = router.get("/apps/a/requests/r1").mock(
        return_value=httpx.Response(200, json={"images": ["x.png"]})
    )
    cancel = router.put("/apps/a/requests/r1/cancel").mock(
        return_value=httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})
    )
    async with queue_api().get_client() as client:
        ref = await client.submit({"prompt": "a cat"})
    assert ref.context == URLS
    resumed = JobRef.model_validate_json(ref.model_dump_json())  # what the ledger keeps
    async with queue_api().get_client() as other:
        outcome = await other.wait_for_result(resumed)
        assert await other.cancel(resumed) is True
    assert outcome.output == {"images": ["x.png"]}
    assert submit.call_count == 1 and status.call_count == 2
    assert result.call_count == 1 and cancel.call_count == 1


async def test_the_ledger_row_keeps_the_context_the_job_urls_need(tmp_path, router):
    submitted(router)
    block = queue_api()
    ledger = Ledger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    try:
        async with (
            block.get_client() as client,
            LedgerSubmitter(block, flow_run_id=None, ledger=ledger) as submitter,
        ):
            request = block.parse_request({"prompt": "a cat"})
            ref, _ = await submitter.submit(
                "k-1", request, lambda: client.submit(request, idempotency_key="k-1")
            )
        (row,) = await ledger.rows_named("k-1")
    finally:
        await ledger.aclose()
    assert row.ref is not None and row.ref.context == ref.context == URLS


async def test_a_result_url_named_by_the_final_status_is_used(clock, router):
    router.post("/apps/a/sub").mock(return_value=httpx.Response(200, json={"request_id": "r1"}))
    router.get("/jobs/r1").mock(
        return_value=httpx.Response(200, json={"status": "COMPLETED", "output_path": "out/r1"})
    )
    result = router.get("/out/r1").mock(return_value=httpx.Response(200, json={"ok": True}))
    api = queue_api(status_url="jobs/{job_id}", result_url="{output_path}", cancel_url=None)
    async with api.get_client() as client:
        ref = await client.submit({})
        assert ref.context == {}  # the submit answered none of the names
        outcome = await client.wait_for_result(ref)
    assert outcome.output == {"ok": True} and result.call_count == 1


async def test_a_url_on_another_origin_is_refused_and_never_sent_the_key(clock, router):
    elsewhere = respx.get("https://evil.example.net/steal").mock(return_value=httpx.Response(200))
    submitted(router, status_url="https://evil.example.net/steal")
    async with queue_api().get_client() as client:
        ref = await client.submit({})
        with pytest.raises(BadRequestError, match="another origin"):
            await client.poll(ref)
    assert not elsewhere.called


async def test_a_template_naming_a_field_never_sent_is_a_contract_mismatch(clock, router):
    router.post("/apps/a/sub").mock(return_value=httpx.Response(200, json={"request_id": "r1"}))
    async with queue_api().get_client() as client:
        ref = await client.submit({})
        with pytest.raises(ContractMismatchError, match=r"\{status_url\}") as raised:
            await client.poll(ref)
    assert not raised.value.retryable


async def test_a_result_url_answering_5xx_is_retried_a_few_times_then_fails_typed(clock, router):
    submitted(router)
    completed(router)
    result = router.get("/apps/a/requests/r1").mock(return_value=httpx.Response(503))
    async with queue_api().get_client() as client:
        ref = await client.submit({})
        status = await client.wait(ref)
        started = clock.time()
        with pytest.raises(ResultUnavailableError, match=URLS["response_url"]) as raised:
            await client.fetch_result(ref, status)
    assert result.call_count == SUBMIT_ATTEMPTS
    assert 0 < clock.time() - started < 10  # seconds, not a minute of task retries
    assert not raised.value.retryable and raised.value.http_status == 503


async def test_a_result_url_recovering_within_its_attempts_gives_the_result(clock, router):
    submitted(router)
    completed(router)
    router.get("/apps/a/requests/r1").mock(
        side_effect=[httpx.Response(502), httpx.Response(200, json={"v": 1})]
    )
    async with queue_api().get_client() as client:
        outcome = await client.wait_for_result(await client.submit({}))
    assert outcome.output == {"v": 1}


@pytest.mark.parametrize(
    "answer, came",
    [
        (httpx.Response(200, text="<html>oops</html>"), "not JSON"),
        (httpx.Response(200, json=[1, 2]), "JSON list"),
    ],
)
async def test_a_result_body_the_contract_cannot_read_fails_at_once(clock, router, answer, came):
    submitted(router)
    completed(router)
    result = router.get("/apps/a/requests/r1").mock(return_value=answer)
    async with queue_api().get_client() as client:
        with pytest.raises(ContractMismatchError, match=came) as raised:
            await client.wait_for_result(await client.submit({}))
    assert result.call_count == 1 and not raised.value.retryable
    assert "JSON object" in raised.value.message and URLS["response_url"] in raised.value.message


async def test_a_result_status_declared_as_an_end_raises_its_typed_error(clock, router):
    submitted(router)
    completed(router)
    router.get("/apps/a/requests/r1").mock(
        return_value=httpx.Response(499, json={"detail": "Request cancelled"})
    )
    async with queue_api(result_ended={499: "cancelled"}).get_client() as client:
        with pytest.raises(JobCancelledError) as raised:
            await client.wait_for_result(await client.submit({}))
    assert raised.value.status.error_code == "499"
    with pytest.raises(ValidationError, match="HTTP error statuses"):
        queue_api(result_ended={200: "failed"})


async def test_fixed_headers_go_with_every_request_and_never_authorization(clock, router):
    submit = submitted(router)
    status = completed(router)
    async with queue_api(headers={"X-Api-Version": "2026-01"}).get_client() as client:
        await client.wait(await client.submit({}))
    for route in (submit, status):
        assert route.calls.last.request.headers["X-Api-Version"] == "2026-01"
    with pytest.raises(ValidationError, match="Authorization goes in api_key"):
        queue_api(headers={"authorization": "Bearer x"})


async def test_a_callback_url_in_a_query_parameter(clock, router):
    submit = submitted(router)
    api = queue_api(
        callback_url_in="query",
        callback_url_field="webhook",
        callback_base_url="https://hooks.example.com",
        webhook_secret=SECRET,
    )
    async with api.get_client() as client:
        ref = await client.submit({"prompt": "a cat"})
    sent = submit.calls.last.request
    assert sent.url.params["webhook"].startswith("https://hooks.example.com/hooks/queue/")
    assert json.loads(sent.content) == {"prompt": "a cat"} and ref.callback is not None


async def test_callbacks_to_one_url_per_account_match_the_job_by_its_id(clock, router):
    submit = submitted(router)
    api = queue_api(
        callback_url_in="none",
        callback_job_id_field="request_id",
        callback_base_url="https://hooks.example.com",
        webhook_secret=SECRET,
    )
    async with api.get_client() as client:
        ref = await client.submit({"prompt": "a cat"})
    sent = submit.calls.last.request
    assert not sent.url.params and json.loads(sent.content) == {"prompt": "a cat"}
    assert ref.callback is not None and ref.callback.flow_run == "-"
    inbox = CallbackInbox()
    wakeup = inbox.register(ref)
    replays = LedgerReplays("sqlite+aiosqlite:///" + tempfile.mkdtemp() + "/ledger.db")
    app = create_webhook_app([api], inbox=inbox, emit_events=False, replays=replays)
    body = json.dumps({"request_id": "r1", "status": "COMPLETED"})
    now = datetime.now(timezone.utc)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(SECRET).sign("msg_1", now, body),
        "content-type": "application/json",
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as hooks:
        answer = await hooks.post("/hooks/queue/-", content=body, headers=headers)
    assert answer.status_code < 300, answer.text
    assert wakeup.count == 1


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"callback_url_in": "query"}, "needs callback_url_field"),
        ({"callback_url_in": "none", "callback_url_field": "hook"}, "must be empty"),
        (
            {
                "callback_url_in": "none",
                "callback_scheme": "capability-url",
                "callback_base_url": "https://h.example.com",
                "webhook_secret": "x" * 40,
            },
            "need a per-job URL",
        ),
        ({"callback_url_in": "query", "callback_url_field": "a b"}, "query parameter name"),
    ],
)
def test_callback_declarations_that_cannot_work_are_refused(fields, problem):
    with pytest.raises(ValidationError, match=problem):
        queue_api(**fields)


async def test_a_webhook_secret_url_must_stay_relative():
    with pytest.raises(ValidationError, match="relative to base_url"):
        queue_api(webhook_secret_url="https://elsewhere.example.com/secret")
