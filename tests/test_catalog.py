"""The catalog's presets (Replicate, fal, RunPod, AssemblyAI) work against fakes of their docs.

Each preset is loaded by name and driven through the client's submit, wait, result and
cancel on a virtual clock against ``tests/vendor_fakes.py``; callbacks go through the
webhook receiver; the fakes' answers are checked against the vendors' SDK models
(replicate, fal-client, assemblyai; RunPod's SDK is left out: it pulls boto3, fastapi
and paramiko).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import respx
import standardwebhooks
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from prefect_pollers import (
    HttpJobApi,
    JobCancelledError,
    JobExpiredError,
    JobFailedError,
    JobRef,
    JobState,
)
from prefect_pollers.engine import JobEndedError
from prefect_pollers.ledger.replays import LedgerReplays
from prefect_pollers.providers.catalog import entry, names, preset
from prefect_pollers.providers.signatures import FAL
from prefect_pollers.testing import VirtualClock, use_clock
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import CallbackInbox
from tests.vendor_fakes import AssemblyAIFake, FalFake, ReplicateFake, RunPodFake, VendorFake

KEY = "SENTINEL-catalog-key"
RECEIVER = "https://hooks.example.com"
CAPABILITY_SECRET = "capability-secret-0123456789-abcdefghijkl"


@dataclass(frozen=True)
class Case:
    """One catalog API: its fake, the preset's parameters, a request, its output."""

    fake: Callable[[], VendorFake]
    parameters: dict[str, str]
    request: dict[str, Any]
    output: Any
    ends: dict[str, type[JobEndedError]]  # scripted outcome -> the error it ends in
    cancels: bool


CASES = {
    "replicate": Case(
        lambda: ReplicateFake(KEY),
        {},
        {"version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5", "input": {"text": "Alice"}},
        "hello Alice",
        {"failed": JobFailedError, "cancelled": JobCancelledError},
        cancels=True,
    ),
    "fal": Case(
        lambda: FalFake(KEY, app="fal-ai/flux/dev"),
        {"app": "fal-ai/flux/dev"},
        {"prompt": "a cat"},
        {
            "images": [{"url": "https://v3.fal.media/files/x.png", "width": 1024, "height": 768}],
            "seed": 42,
            "prompt": "a cat",
        },
        {"failed": JobFailedError, "cancelled": JobCancelledError},
        cancels=True,
    ),
    "runpod": Case(
        lambda: RunPodFake(KEY, endpoint_id="ep123"),
        {"endpoint_id": "ep123"},
        {"input": {"prompt": "a cat"}},
        [{"image": "https://image.url", "seed": 46578}],
        {"failed": JobFailedError, "cancelled": JobCancelledError, "expired": JobExpiredError},
        cancels=True,
    ),
    "assemblyai": Case(
        lambda: AssemblyAIFake(KEY),
        {},
        {"audio_url": "https://assembly.ai/wildfires.mp3"},
        "Smoke from hundreds of wildfires in Canada",
        {"failed": JobFailedError},
        cancels=False,
    ),
}


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    with use_clock(VirtualClock()) as clock:
        assert isinstance(clock, VirtualClock)
        yield clock


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def api(name: str, **fields: Any) -> HttpJobApi:
    return preset(name, api_key=KEY, **CASES[name].parameters, **fields)


def test_the_catalog_lists_its_four_apis_each_citing_public_docs():
    assert names() == ["assemblyai", "fal", "replicate", "runpod"]
    for name in names():
        found = entry(name)
        assert found.docs and all(page.startswith("https://") for page in found.docs)
        block = api(name)
        assert block.api_name == name and block.policy.deadline
        assert block.callback_spec() is None  # callbacks stay off until asked for


def test_preset_parameters_and_overrides():
    fal = preset("fal", app="fal-ai/fast-sdxl", api_key=KEY, policy={"deadline": 60})
    assert fal.submit_path == "fal-ai/fast-sdxl"
    assert (
        fal.policy.deadline == 60
        and fal.policy.interval == entry("fal").block["policy"]["interval"]
    )
    assert KEY not in repr(fal)
    assert fal.callback_scheme == FAL  # fal's own Ed25519 signatures, its JWKS
    assert preset("runpod", endpoint_id="abc", timeout_s=5).base_url.endswith("/v2/abc")
    with pytest.raises(ValueError, match="needs app"):
        preset("fal")
    with pytest.raises(ValueError, match=r"no API .openai.*assemblyai, fal"):
        preset("openai")
    with pytest.raises(ValueError, match="colour: neither a parameter"):
        preset("replicate", colour="red")
    with pytest.raises(ValueError, match="letters, digits"):
        preset("fal", app="fal-ai/../x?y")
    with pytest.raises(ValidationError):
        preset("replicate", status_url="predictions/latest")


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_preset_runs_a_job_to_its_result(name, clock, router):
    case = CASES[name]
    fake = case.fake().mount(router)
    async with api(name).get_client() as client:
        ref = await client.submit(case.request, idempotency_key=f"cat-{name}")
        seen: list[JobState] = []
        result = await client.wait_for_result(
            ref, on_change=lambda old, new: seen.append(new.state)
        )
    assert fake.calls["submits"] == 1 and ref.job_id in fake.jobs
    assert seen[-1] is JobState.SUCCEEDED and JobState.RUNNING in seen
    assert result.output == case.output


@pytest.mark.parametrize(
    "name, outcome",
    [(name, outcome) for name, case in sorted(CASES.items()) for outcome in case.ends],
)
async def test_each_preset_ends_its_failures_in_typed_errors(name, outcome, clock, router):
    case = CASES[name]
    fake = case.fake().mount(router)
    fake.outcome = outcome
    async with api(name).get_client() as client:
        ref = await client.submit(case.request)
        with pytest.raises(case.ends[outcome]) as raised:
            await client.wait_for_result(ref)
    status = raised.value.status
    assert status.job_id == ref.job_id
    if outcome == "failed":
        assert status.error_message  # the provider's own words


async def test_a_failed_fal_request_completed_with_an_error_is_a_failure(clock, router):
    fake = FalFake(KEY).mount(router)
    fake.outcome = "failed"
    async with api("fal").get_client() as client:
        ref = await client.submit({"prompt": "x"})
        with pytest.raises(JobFailedError) as raised:
            await client.wait_for_result(ref)
    assert raised.value.status.raw_status == "FAILED"  # derived: error && 'FAILED' || status
    assert raised.value.status.error_code == "content_policy"
    assert fake.calls["results"] == 0  # a failure fetches no result


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_preset_cancels_where_its_api_can(name, clock, router):
    case = CASES[name]
    fake = case.fake().mount(router)
    async with api(name).get_client() as client:
        ref = await client.submit(case.request)
        assert await client.cancel(ref) is case.cancels
        if not case.cancels:
            return
        with pytest.raises(JobCancelledError):
            await client.wait_for_result(ref)
    assert fake.calls["cancels"] == 1 and fake.jobs[ref.job_id].cancelled


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_preset_rides_out_a_burst_of_429s(name, clock, router):
    case = CASES[name]
    fake = case.fake().mount(router)
    async with api(name).get_client() as client:
        ref = await client.submit(case.request)
        fake.throttle = 2
        started = clock.time()
        result = await client.wait_for_result(ref)
    assert result.output == case.output
    assert fake.calls["429"] == 2
    assert clock.time() - started >= 6  # Retry-After: 3, twice


def fresh_replays() -> LedgerReplays:
    return LedgerReplays("sqlite+aiosqlite:///" + tempfile.mkdtemp() + "/ledger.db")


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_preset_calls_back_where_its_api_takes_the_url(name, clock, router):
    case = CASES[name]
    fake = case.fake().mount(router)
    fields: dict[str, Any] = {"callback_base_url": RECEIVER}
    if name not in ("replicate", "fal"):
        fields["webhook_secret"] = CAPABILITY_SECRET  # capability-URL tokens
    block = api(name, **fields)
    if name == "replicate":  # its signing secret, from its API
        block = await block.with_webhook_secret()
        again = await api(name, **fields).with_webhook_secret()
        assert fake.calls["secret"] == 1  # fetched once per process
        assert again.webhook_secret == block.webhook_secret
        assert ReplicateFake.SECRET not in repr(block)
    async with block.get_client() as client:
        ref = await client.submit(case.request)
    job = fake.jobs[ref.job_id]
    assert ref.callback is not None and job.callback_url
    assert job.callback_url.startswith(f"{RECEIVER}/hooks/{name}/")
    if name == "fal":  # in the fal_webhook query parameter, not the body
        assert "fal_webhook" not in job.request
    inbox = CallbackInbox()
    wakeup = inbox.register(ref)
    app = create_webhook_app([block], inbox=inbox, emit_events=False, replays=fresh_replays())
    url, body = fake.callback(job)
    headers = {"content-type": "application/json"}
    if name == "replicate":
        now = datetime.now(timezone.utc)
        signature = standardwebhooks.Webhook(ReplicateFake.SECRET).sign("msg_1", now, body.decode())
        headers.update(
            {
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature,
            }
        )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RECEIVER) as hook:
        if isinstance(fake, FalFake):  # Ed25519 under fal's JWKS: a forgery is refused first
            forged = fake.signature_headers(job, body, key=Ed25519PrivateKey.generate())
            refused = await hook.post(url.removeprefix(RECEIVER), content=body, headers=forged)
            assert refused.status_code == 401 and wakeup.count == 0
            headers.update(fake.signature_headers(job, body))
        answer = await hook.post(url.removeprefix(RECEIVER), content=body, headers=headers)
    assert answer.status_code < 300, answer.text
    assert wakeup.count == 1
    if isinstance(fake, FalFake):
        assert fake.calls["jwks"] >= 1


async def test_a_fal_wait_resumed_elsewhere_polls_the_urls_its_submit_answered(clock, router):
    fake = FalFake(KEY, app="fal-ai/flux/dev").mount(router)
    async with api("fal").get_client() as client:
        ref = await client.submit({"prompt": "a cat"})
    assert ref.context == {
        name: url for name, url in fake.urls(fake.jobs[ref.job_id]).items()
    }  # the app's subpath is not in them: no block per app
    resumed = JobRef.model_validate_json(ref.model_dump_json())
    async with api("fal").get_client() as other:
        result = await other.wait_for_result(resumed)
    assert result.output["seed"] == 42


# -- the fakes against the vendors' SDK models --------------------------------------------
async def answers(name: str, outcome: str, clock: VirtualClock) -> list[dict[str, Any]]:
    """Every JSON body the fake answered for one job, submit first."""
    case = CASES[name]
    bodies: list[dict[str, Any]] = []
    with respx.mock(assert_all_called=False) as router:
        fake = case.fake().mount(router)
        fake.outcome = outcome
        async with api(name).get_client() as client:
            ref = await client.submit(case.request)
            with contextlib.suppress(JobEndedError):
                await client.wait_for_result(ref)
        for call in router.calls:
            if call.response.status_code < 300:
                bodies.append(call.response.json())
    return bodies


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "cancelled"])
async def test_replicate_fake_answers_parse_as_the_sdks_predictions(outcome, clock):
    from replicate.prediction import Prediction

    for body in await answers("replicate", outcome, clock):
        prediction = Prediction.parse_obj(body)
        assert prediction.id and prediction.status == body["status"]


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
async def test_fal_fake_answers_parse_as_the_sdks_handle_and_statuses(outcome, clock):
    from fal_client.client import Completed, InProgress, Queued, _BaseRequestHandle

    submit, *rest = await answers("fal", outcome, clock)
    handle = _BaseRequestHandle(
        request_id=submit["request_id"],
        response_url=submit["response_url"],
        status_url=submit["status_url"],
        cancel_url=submit["cancel_url"],
    )
    statuses = [handle._parse_status(body) for body in rest if "status" in body]
    assert [type(s) for s in statuses] == [Queued, InProgress, Completed]
    completed = statuses[-1]
    assert isinstance(completed, Completed)
    assert (completed.error is not None) is (outcome == "failed")


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
async def test_assemblyai_fake_answers_parse_as_the_sdks_transcripts(outcome, clock):
    from assemblyai.types import TranscriptResponse

    for body in await answers("assemblyai", outcome, clock):
        transcript = TranscriptResponse.model_validate(body)
        assert transcript.status.value == body["status"]


async def test_the_fal_sdk_runs_against_the_fal_fake():
    import fal_client

    with respx.mock(assert_all_called=False) as router:
        fake = FalFake(KEY).mount(router)
        sdk = fal_client.AsyncClient(key=KEY)
        handle = await sdk.submit(
            "fal-ai/flux/dev", arguments={"prompt": "a cat"}, webhook_url="https://h.example/x"
        )
        statuses = [await handle.status() for _ in range(3)]
        result = await handle.get()
        cancelled = await sdk.submit("fal-ai/flux/dev", arguments={"prompt": "a dog"})
        await cancelled.cancel()
        with pytest.raises(fal_client.client.FalClientHTTPError) as raised:
            await cancelled.get()
    assert fake.jobs[handle.request_id].callback_url == "https://h.example/x"  # fal_webhook
    assert [type(s).__name__ for s in statuses] == ["Queued", "InProgress", "Completed"]
    assert result["seed"] == 42
    assert raised.value.status_code == 499


def test_the_replicate_sdk_runs_against_the_replicate_fake():
    import replicate

    with respx.mock(assert_all_called=False) as router:
        fake = ReplicateFake(KEY).mount(router)
        sdk = replicate.Client(api_token=KEY)
        prediction = sdk.predictions.create(version="5c7d5dc6", input={"text": "Bob"})
        for _ in range(3):
            prediction.reload()
        other = sdk.predictions.create(version="5c7d5dc6", input={"text": "Eve"})
        other.cancel()
    assert prediction.status == "succeeded" and prediction.output == "hello Bob"
    assert fake.jobs[other.id].cancelled and fake.calls["cancels"] == 1
