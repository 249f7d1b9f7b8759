"""'May have created' is resolved where it can be (issue 19, point 3).

A submit whose answer was lost (a timeout, a connection dropped after sending, a 5xx)
is re-sent under the same idempotency key only where the provider's contract declares
a header it deduplicates submits on; elsewhere its error says the job may exist, names
the key and the ledger command. A 502/503/504 creates nothing only where the contract
says so. The API is an ``httpx.MockTransport``; time is virtual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from prefect_pollers import (
    ApixoCredentials,
    ExonaCredentials,
    HttpJobApi,
    ModelRouteCredentials,
    PollerError,
    TwynCredentials,
)
from prefect_pollers.client import SUBMIT_ATTEMPTS
from prefect_pollers.engine import TransientRequestError
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.testing import VirtualClock, use_clock

REQUEST = {"company_name": "Acme AI Ltd", "company_website": "https://acme.ai"}
LEDGER = "prefect-pollers ledger show"


@pytest.fixture
def clock():
    with use_clock(VirtualClock()) as clock:
        yield clock


Failure = Callable[[int], "httpx.Response | Exception | None"]


class DedupApi:
    """``POST /jobs``: creates a job (once per key when it deduplicates), then answers.

    ``fail(n)`` for the n-th submit (1-based) returns a response to send instead of the
    job, an exception to raise after creating it (the answer lost), or None.
    """

    def __init__(self, fail: Failure, *, dedup_header: str | None = None) -> None:
        self.fail = fail
        self.dedup_header = dedup_header
        self.jobs: list[str] = []
        self.by_key: dict[str, str] = {}
        self.posts: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.posts.append(request)
        failure = self.fail(len(self.posts))
        if isinstance(failure, httpx.Response):
            return failure
        key = request.headers.get(self.dedup_header) if self.dedup_header else None
        job_id = self.by_key.get(key) if key else None
        if job_id is None:
            job_id = f"job-{len(self.jobs) + 1}"
            self.jobs.append(job_id)
            if key:
                self.by_key[key] = job_id
        if isinstance(failure, Exception):
            raise failure
        return httpx.Response(201, json={"id": job_id, "status": "running"})

    def keys(self, header: str = "Idempotency-Key") -> list[str | None]:
        return [r.headers.get(header) for r in self.posts]


def dropped_after_create(n: int) -> Exception | None:
    return httpx.RemoteProtocolError("Server disconnected") if n == 1 else None


def api_block(**fields: Any) -> HttpJobApi:
    return HttpJobApi(api_key="k", base_url="http://jobs.test/api", **fields)


# -- what each seed provider declares ------------------------------------------------------


@pytest.mark.parametrize(
    "creds",
    [
        TwynCredentials(api_key="k"),
        ExonaCredentials(api_key="k"),
        ApixoCredentials(api_key="k", base_url="http://apixo.test"),
        ModelRouteCredentials(api_key="k"),
        api_block(),
    ],
    ids=lambda c: c.provider,
)
def test_no_seed_provider_and_no_undeclared_api_promises_deduplication(creds):
    # None of the four guides documents an idempotency header, duplicate submits or
    # what a 5xx on create means; HttpJobApi is conservative until told otherwise.
    contract = creds.contract()
    assert contract.dedup_header is None
    assert contract.submit_not_created_statuses == frozenset()


def test_an_api_block_declares_its_deduplication_and_not_created_statuses():
    contract = api_block(
        idempotency_header="X-Request-Id",
        deduplicates_submits=True,
        submit_not_created_statuses=[503],
    ).contract()
    assert contract.dedup_header == "X-Request-Id"
    assert contract.submit_not_created_statuses == {503}


# -- without deduplication: the error says the job may exist, once -------------------------


async def submit(creds: JobApiCredentials[Any], api: DedupApi, **kwargs: Any) -> Any:
    transport = httpx.MockTransport(api)
    async with creds.get_client(transport=transport) as client:
        return await client.submit(kwargs.pop("request", {"task": "x"}), **kwargs)


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_gateway_error_on_submit_may_have_created_the_job(clock, status):
    api = DedupApi(lambda _n: httpx.Response(status, text="<html>Bad gateway</html>"))
    with pytest.raises(TransientRequestError) as info:
        await submit(
            ExonaCredentials(api_key="k"), api, request=REQUEST, idempotency_key="acme-2026-11"
        )
    error = info.value
    assert len(api.posts) == 1 and error.http_status == status
    assert error.may_have_created is True and error.idempotency_key == "acme-2026-11"
    assert "may have been created all the same" in str(error)
    assert f"`{LEDGER} acme-2026-11`" in str(error)


async def test_a_declared_not_created_status_is_retried(clock):
    api = DedupApi(lambda n: httpx.Response(502) if n <= 2 else None)
    creds = api_block(submit_not_created_statuses=[502, 503])
    started = clock.time()
    ref = await submit(creds, api, idempotency_key="k-1")
    assert len(api.posts) == 3 and api.jobs == ["job-1"] and ref.job_id == "job-1"
    assert clock.time() - started == 1 + 2  # the submit backoff


async def test_a_declared_not_created_status_that_persists_says_nothing_was_created(clock):
    api = DedupApi(lambda _n: httpx.Response(503))
    with pytest.raises(TransientRequestError) as info:
        await submit(api_block(submit_not_created_statuses=[503]), api, idempotency_key="k")
    assert len(api.posts) == SUBMIT_ATTEMPTS and info.value.may_have_created is False
    assert LEDGER not in str(info.value)


async def test_a_lost_answer_without_deduplication_names_the_key_and_the_ledger(clock):
    api = DedupApi(dropped_after_create)
    with pytest.raises(TransientRequestError) as info:
        await submit(api_block(), api, idempotency_key="acme-1")
    error = info.value
    assert len(api.posts) == 1 and api.jobs == ["job-1"]  # created, and never heard of
    assert error.may_have_created is True
    assert "may have been created all the same (idempotency key 'acme-1')" in str(error)
    assert f"`{LEDGER} acme-1`" in str(error)


def test_the_ledger_command_quotes_a_key_for_the_shell():
    error = PollerError("lost", idempotency_key="batch 7/it's", may_have_created=True)
    assert f"""`{LEDGER} 'batch 7/it'"'"'s'`""" in str(error)


# -- with deduplication: re-sent under the same key, one job -------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.RemoteProtocolError("Server disconnected"),
        httpx.ReadTimeout("slow"),
        httpx.Response(500, text="boom"),
        httpx.Response(502, text="bad gateway"),
    ],
    ids=["dropped", "timeout", "500", "502"],
)
async def test_a_lost_answer_is_resent_once_with_the_same_key_where_deduplicated(clock, failure):
    api = DedupApi(lambda n: failure if n == 1 else None, dedup_header="Idempotency-Key")
    started = clock.time()
    ref = await submit(api_block(deduplicates_submits=True), api, idempotency_key="acme-2")
    assert api.keys() == ["acme-2", "acme-2"]
    assert api.jobs == ["job-1"] and ref.job_id == "job-1"
    assert clock.time() - started == 1  # the first submit backoff


async def test_the_declared_header_carries_the_key(clock):
    api = DedupApi(dropped_after_create, dedup_header="X-Request-Id")
    creds = api_block(idempotency_header="X-Request-Id", deduplicates_submits=True)
    ref = await submit(creds, api, idempotency_key="acme-3")
    assert api.keys("X-Request-Id") == ["acme-3", "acme-3"] and ref.job_id == "job-1"


async def test_without_a_key_nothing_deduplicates_so_nothing_is_resent(clock):
    api = DedupApi(dropped_after_create, dedup_header="Idempotency-Key")
    with pytest.raises(TransientRequestError) as info:
        await submit(api_block(deduplicates_submits=True), api)
    assert len(api.posts) == 1 and info.value.may_have_created is True


async def test_a_deduplicated_submit_that_keeps_failing_still_says_the_job_may_exist(clock):
    api = DedupApi(lambda _n: httpx.ReadTimeout("slow"), dedup_header="Idempotency-Key")
    with pytest.raises(TransientRequestError) as info:
        await submit(api_block(deduplicates_submits=True), api, idempotency_key="acme-4")
    assert api.keys() == ["acme-4"] * SUBMIT_ATTEMPTS and api.jobs == ["job-1"]
    assert info.value.may_have_created is True and f"{LEDGER} acme-4" in str(info.value)
