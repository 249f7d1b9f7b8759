"""``HttpJobApi`` covers what real job APIs need (issue 20 §5), and refuses a request
that cannot fill its submit path before anything is sent (issue 20 §1).

Most tests run the block's client against the in-process simulator (its generic API)
through ``httpx.ASGITransport``, on one virtual clock; the wire details (raw paths,
bodies, headers) are read from an ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from prefect_pollers import AuthenticationError, HttpJobApi, InvalidRequestError, JobRef, JobState
from prefect_pollers.batch.models import BatchItem
from prefect_pollers.batch.runner import parse_items, run_batch
from prefect_pollers.client import JobApiClient, shared_client
from prefect_pollers.engine.http import parse_hints
from prefect_pollers.providers.contract import fill
from prefect_pollers.testing import VirtualClock, use_clock
from prefect_pollers.testing.registry import GENERIC_SIMULATOR_API, SIMULATOR_API_KEY
from prefect_pollers.testing.simulator import SimulatorConfig, create_app

SIM_URL = "http://sim/generic/v2"
PASSWORD = "pw_SENTINEL_91c2"
ODD = "x/y?z#w v%"  # every character that could change a URL's structure
ODD_ENCODED = "x%2Fy%3Fz%23w%20v%25"


class _SimulatorTime:
    """The simulator reads the test's virtual clock (it only reads, never sleeps)."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock

    def monotonic(self) -> float:
        return self.clock.time()

    def time(self) -> float:
        return self.clock.time()


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    with use_clock(VirtualClock()) as clock:
        assert isinstance(clock, VirtualClock)
        yield clock


@pytest.fixture
async def sim(clock: VirtualClock) -> AsyncIterator[Any]:
    """The simulator app, on the virtual clock, in simulated time."""
    app = create_app(SimulatorConfig(time_scale=1.0, seed=7), clock=_SimulatorTime(clock))
    yield app
    await app.state.simulator.aclose()


def generic(**fields: Any) -> HttpJobApi:
    """The simulator's generic API declaration, with ``fields`` changed."""
    return HttpJobApi(
        **{**GENERIC_SIMULATOR_API, "base_url": SIM_URL, "api_key": SIMULATOR_API_KEY, **fields}
    )


def on_sim(block: HttpJobApi, sim: Any) -> JobApiClient[Any]:
    return block.get_client(transport=httpx.ASGITransport(app=sim))


def counters(sim: Any) -> dict[str, Any]:
    stats: dict[str, Any] = sim.state.simulator.stats()["generic"]
    return stats


Handler = Callable[[httpx.Request], httpx.Response]


def recording(answer: Handler) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A transport answering with ``answer`` that keeps every request it got."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return seen, httpx.MockTransport(handle)


def plain_api(**fields: Any) -> HttpJobApi:
    """A minimal declaration: ``{"id", "status"}`` answers, results in the final status."""
    return HttpJobApi(**{"base_url": "https://jobs.test/v1", "api_key": "k", **fields})


def job_answer(job_id: str = "j-1", status: str = "running") -> Handler:
    return lambda request: httpx.Response(200, json={"id": job_id, "status": status})


# -- 1. pending statuses ---------------------------------------------------------------
async def test_statuses_declared_pending_are_reported_pending_not_running(sim, clock):
    block = generic(pending=["QUEUED"], running=["WORKING"])
    seen: list[JobState] = []
    async with on_sim(block, sim) as client:
        ref = await client.submit({"kind": "render", "params": {}})
        first = await client.poll(ref)
        final = await client.wait(ref, on_change=lambda old, new: seen.append(new.state))
    assert (first.raw_status, first.state, first.recognized) == ("QUEUED", JobState.PENDING, True)
    assert seen[-2:] == [JobState.RUNNING, JobState.SUCCEEDED]
    assert final.state is JobState.SUCCEEDED


def test_a_status_declared_both_pending_and_running_is_refused():
    with pytest.raises(ValidationError, match="both pending and running"):
        generic(pending=["QUEUED"], running=["QUEUED", "WORKING"])


# -- 2. values in URL paths are percent-encoded ----------------------------------------
def test_fill_puts_each_value_in_one_path_segment():
    assert fill("a/{x}/b/{y}", {"x": ODD, "y": 7}) == f"a/{ODD_ENCODED}/b/7"
    assert fill("tasks/{job_id}", {"job_id": "t-1_a.b~c"}) == "tasks/t-1_a.b~c"  # unchanged


async def test_job_ids_are_percent_encoded_in_status_result_and_cancel_paths(clock):
    block = plain_api(result_url="jobs/{job_id}/output", cancel_url="jobs/{job_id}/cancel")
    seen, transport = recording(job_answer(ODD, "succeeded"))
    async with block.get_client(transport=transport) as client:
        ref = await client.submit({"n": 1})
        await client.poll(ref)
        await client.fetch_result(ref)
        await client.cancel(ref)
    assert ref.job_id == ODD
    assert [r.url.raw_path for r in seen[1:]] == [
        f"/v1/jobs/{ODD_ENCODED}".encode(),
        f"/v1/jobs/{ODD_ENCODED}/output".encode(),
        f"/v1/jobs/{ODD_ENCODED}/cancel".encode(),
    ]


async def test_job_ref_context_is_percent_encoded_in_job_paths(clock):
    """APIXO's status path names the model; a model name with a slash stays one segment."""
    from prefect_pollers import ApixoCredentials

    creds = ApixoCredentials(api_key="k", base_url="https://apixo.test/api/v1")
    seen, transport = recording(
        lambda request: httpx.Response(200, json={"data": {"state": "generating"}})
    )
    async with creds.get_client(transport=transport) as client:
        await client.poll(JobRef(provider="apixo", job_id="t 1", context={"model": "a/b"}))
    assert seen[0].url.raw_path == b"/api/v1/checkStatus/a%2Fb/t%201"


async def test_request_fields_are_percent_encoded_in_the_submit_path(clock):
    block = plain_api(submit_path="queues/{queue}/jobs")
    seen, transport = recording(job_answer())
    async with block.get_client(transport=transport) as client:
        await client.submit({"queue": ODD, "n": 1})
    assert seen[0].url.raw_path == f"/v1/queues/{ODD_ENCODED}/jobs".encode()


async def test_a_queue_name_with_reserved_characters_reaches_the_simulator_intact(sim, clock):
    """The simulator routes on the decoded path: a ``/`` would split it; ``?#`` and a
    space, unencoded, would end the path or break the request line."""
    block = generic(submit_path="queues/{queue}/tasks")
    async with on_sim(block, sim) as client:
        ref = await client.submit({"queue": "eu west?#1", "kind": "render", "params": {}})
        status = await client.poll(ref)
    assert status.payload["task"]["queue"] == "eu west?#1"
    assert counters(sim)["submits"] == 1


# -- 3. HTTP Basic auth ------------------------------------------------------------------
async def test_basic_auth_from_username_and_password_is_accepted(sim, clock):
    block = generic(api_key="", username="ops", password=SIMULATOR_API_KEY)
    async with on_sim(block, sim) as client:
        ref = await client.submit({"kind": "render", "params": {"n": 1}})
        result = await client.wait_for_result(ref)
    assert result.output["kind"] == "render"


async def test_a_wrong_password_is_refused_and_named_nowhere(sim, clock):
    block = generic(api_key="", username="ops", password=PASSWORD)
    async with on_sim(block, sim) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.submit({"kind": "render", "params": {}})
    assert info.value.http_status == 401 and counters(sim)["http_401"] == 1
    for text in (str(info.value), repr(info.value), repr(block), repr(block.contract())):
        assert PASSWORD not in text
    assert PASSWORD not in block.model_dump_json() and PASSWORD not in str(block.model_dump())


async def test_basic_auth_and_a_key_in_another_header_are_both_sent(clock):
    block = plain_api(api_key="key-1", auth_header="X-Api-Key", username="u", password="p")
    seen, transport = recording(job_answer())
    async with block.get_client(transport=transport) as client:
        await client.submit({"n": 1})
    headers = seen[0].headers
    assert headers["Authorization"] == "Basic dTpw"  # base64 of "u:p"
    assert headers["X-Api-Key"] == "Bearer key-1"


async def test_a_block_without_basic_auth_sends_its_key_as_before(clock):
    seen, transport = recording(job_answer())
    async with plain_api(api_key="key-1").get_client(transport=transport) as client:
        await client.submit({"n": 1})
    assert seen[0].headers["Authorization"] == "Bearer key-1"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"username": "u"}, "both username and password"),
        ({"password": "p"}, "both username and password"),
        ({"api_key": "k", "username": "u", "password": "p"}, "auth_header"),
    ],
)
def test_basic_auth_declarations_that_cannot_work_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        HttpJobApi(base_url="https://jobs.test", **fields)


async def test_blocks_differing_only_in_password_do_not_share_a_client(clock):
    first = plain_api(api_key="", username="u", password="one")
    second = plain_api(api_key="", username="u", password="two")
    assert first.pool_key() != second.pool_key()
    assert first.pool_key() == plain_api(api_key="", username="u", password="one").pool_key()
    assert shared_client(first) is not shared_client(second)


# -- 4. submit_exclude ---------------------------------------------------------------------
async def submitted_body(block: HttpJobApi, request: dict[str, Any]) -> Any:
    seen, transport = recording(job_answer())
    async with block.get_client(transport=transport) as client:
        await client.submit(request)
    return json.loads(seen[0].content)


async def test_fields_in_the_submit_path_are_not_sent_in_the_body(clock):
    block = plain_api(submit_path="queues/{queue}/jobs")
    assert await submitted_body(block, {"queue": "q1", "n": 1}) == {"n": 1}


async def test_listed_submit_exclude_fields_are_not_sent_in_the_body(clock):
    block = plain_api(submit_path="queues/{queue}/jobs", submit_exclude=["debug"])
    body = await submitted_body(block, {"queue": "q1", "debug": True, "n": 1})
    assert body == {"n": 1}


async def test_a_submit_body_expression_shapes_the_body_itself(clock):
    """A declared body may put a path field in the body too: it says what the body holds."""
    block = plain_api(submit_path="queues/{queue}/jobs", submit_body="{queue: queue, n: n}")
    assert await submitted_body(block, {"queue": "q1", "n": 1}) == {"queue": "q1", "n": 1}


# -- 5. X-RateLimit-Reset as epoch seconds or seconds from now ----------------------------
def test_parse_hints_reads_the_reset_as_declared():
    headers = httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "30"})
    assert parse_hints(headers, now=1_000.0).ratelimit_reset == 30.0  # epoch, as before
    assert parse_hints(headers, now=1_000.0, ratelimit_reset="delta").ratelimit_reset == 1_030.0


def test_the_block_declares_the_reset_form_in_its_contract():
    assert generic().contract().ratelimit_reset == "epoch"
    assert generic(ratelimit_reset="delta").contract().ratelimit_reset == "delta"
    with pytest.raises(ValidationError):
        generic(ratelimit_reset="minutes")


async def test_a_delta_reset_holds_the_next_request_until_the_window_resets(clock):
    headers = {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "30"}
    seen, transport = recording(
        lambda request: httpx.Response(200, json={"id": "j", "status": "running"}, headers=headers)
    )
    async with plain_api(ratelimit_reset="delta").get_client(transport=transport) as client:
        ref = JobRef(provider="http-job-api", job_id="j")
        await client.poll(ref)
        before = clock.time()
        await client.poll(ref)
    assert clock.time() - before >= 30 and len(seen) == 2  # held until the reset


# -- 6. up-front validation covers the submit path's fields -------------------------------
QUEUED = {"submit_path": "queues/{queue}/tasks"}


@pytest.mark.parametrize(
    "request_fields, problem",
    [
        ({"kind": "render", "params": {}}, "queue: missing"),
        ({"queue": None, "kind": "render", "params": {}}, "queue: missing"),
        ({"queue": "", "kind": "render", "params": {}}, "queue: empty"),
        ({"queue": {"name": "q"}, "kind": "render", "params": {}}, "queue: a dict"),
    ],
)
def test_a_request_that_cannot_fill_the_submit_path_is_refused(request_fields, problem):
    block = generic(**QUEUED)
    with pytest.raises(InvalidRequestError) as info:
        block.parse_request(request_fields, where="(item 3)")
    message = info.value.message
    assert problem in message and "queues/{queue}/tasks" in message and "(item 3)" in message
    model = block.request_model.model_validate(request_fields)  # a model is checked too
    with pytest.raises(InvalidRequestError, match=problem):
        block.parse_request(model)


def test_a_request_with_its_path_fields_is_accepted():
    parsed = generic(**QUEUED).parse_request({"queue": 7, "kind": "render", "params": {}})
    assert parsed.model_dump()["queue"] == 7


def test_a_batch_refuses_an_item_missing_a_path_field_naming_it():
    items = [
        BatchItem(label="a", key="k1", request={"queue": "q", "kind": "r", "params": {}}),
        BatchItem(label="b", key="k2", request={"kind": "r", "params": {}}, source="jobs.csv:3"),
    ]
    with pytest.raises(InvalidRequestError) as info:
        parse_items(generic(**QUEUED), items)
    message = info.value.message
    assert "nothing was submitted" in message and "1 of 2 items invalid" in message
    assert "item 1 ('b', jobs.csv:3)" in message and "queue: missing" in message


async def test_run_batch_refuses_the_batch_before_submitting_anything(sim, clock):
    items = [
        BatchItem(label="a", key="k1", request={"queue": "q", "kind": "r", "params": {}}),
        BatchItem(label="b", key="k2", request={"kind": "r", "params": {}}),
    ]
    with pytest.raises(InvalidRequestError, match=r"item 1 \('b'\).*queue: missing"):
        await run_batch(generic(**QUEUED), items)
    assert counters(sim)["submits"] == 0


def test_a_job_url_template_must_name_something_of_the_job():
    with pytest.raises(ValidationError, match="names nothing of the job"):
        generic(status_url="tasks/latest")
