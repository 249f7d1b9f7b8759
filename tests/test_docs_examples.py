"""The docs' real job APIs (docs/examples/real_apis.py) work as declared.

Each declaration the HttpJobApi page shows is a valid ``HttpJobApi`` that submits, polls
and ends against ``respx`` mocks answering as the provider's public docs show (the
bodies, paths, headers and status names cited on that page), on a virtual clock.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import respx

from prefect_pollers import (
    HttpJobApi,
    JobCancelledError,
    JobExpiredError,
    JobFailedError,
    JobState,
)
from prefect_pollers.testing import VirtualClock, use_clock

ROOT = Path(__file__).parents[1]
KEY = "SENTINEL-docs-key"


def load_examples() -> ModuleType:
    """docs/examples/real_apis.py, imported from its path (docs/ is not a package)."""
    path = ROOT / "docs" / "examples" / "real_apis.py"
    spec = importlib.util.spec_from_file_location("docs_real_apis", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


REAL_APIS: dict[str, HttpJobApi] = load_examples().REAL_APIS


@pytest.fixture(autouse=True)
def clock():
    with use_clock(VirtualClock()) as clock:
        yield clock


def with_key(name: str) -> HttpJobApi:
    """The page's declaration, validated again, with a test key in place of the placeholder."""
    fields = REAL_APIS[name].model_dump()
    return HttpJobApi.model_validate({**fields, "api_key": KEY})


def replies(*bodies: dict[str, Any], status_code: int = 200) -> list[httpx.Response]:
    return [httpx.Response(status_code, json=body) for body in bodies]


def test_the_page_declares_four_valid_real_apis():
    assert set(REAL_APIS) == {"replicate", "fal", "assemblyai", "runpod"}
    for name, api in REAL_APIS.items():
        assert isinstance(api, HttpJobApi) and api.api_name == name
        HttpJobApi.model_validate(api.model_dump())  # every validator passes again
        assert api.base_url.startswith("https://")
        assert api.policy.deadline and api.policy.min_interval >= 1


# -- Replicate predictions --------------------------------------------------------------
PREDICTION = {
    "id": "gm3qorzdhgbfurvjtvhg6dckhu",
    "model": "replicate/hello-world",
    "version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
    "input": {"text": "Alice"},
    "logs": "",
    "output": None,
    "error": None,
    "status": "starting",
    "created_at": "2023-09-08T16:19:34.765994657Z",
    "urls": {
        "cancel": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu/cancel",
        "get": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu",
    },
}
REPLICATE_REQUEST = {"version": PREDICTION["version"], "input": {"text": "Alice"}}


async def test_replicate_prediction_submits_polls_and_returns_its_output():
    api = with_key("replicate")
    prediction_id = PREDICTION["id"]
    with respx.mock(base_url="https://api.replicate.com/v1") as mock:
        create = mock.post("/predictions").mock(return_value=httpx.Response(201, json=PREDICTION))
        get = mock.get(f"/predictions/{prediction_id}").mock(
            side_effect=replies(
                {**PREDICTION, "status": "processing"},
                {**PREDICTION, "status": "succeeded", "output": "hello Alice"},
            )
        )
        async with api.get_client() as client:
            ref = await client.submit(REPLICATE_REQUEST, idempotency_key="docs-1")
            seen: list[JobState] = []
            result = await client.wait_for_result(
                ref, on_change=lambda old, new: seen.append(new.state)
            )
    assert ref.job_id == prediction_id
    assert json.loads(create.calls.last.request.content) == REPLICATE_REQUEST
    assert create.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    assert get.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    assert seen[-1] is JobState.SUCCEEDED and JobState.RUNNING in seen
    assert result.output == "hello Alice" and result.payload["status"] == "succeeded"


async def test_replicate_failed_and_canceled_predictions_raise_typed_errors():
    api = with_key("replicate")
    prediction_id = PREDICTION["id"]
    for final, error in (("failed", JobFailedError), ("canceled", JobCancelledError)):
        with respx.mock(base_url="https://api.replicate.com/v1") as mock:
            mock.post("/predictions").mock(return_value=httpx.Response(201, json=PREDICTION))
            mock.get(f"/predictions/{prediction_id}").mock(
                return_value=httpx.Response(
                    200, json={**PREDICTION, "status": final, "error": "CUDA out of memory"}
                )
            )
            async with api.get_client() as client:
                ref = await client.submit(REPLICATE_REQUEST, idempotency_key=f"docs-{final}")
                with pytest.raises(error) as raised:
                    await client.wait_for_result(ref)
        assert raised.value.status.raw_status == final
    assert raised.value.status.error_message == "CUDA out of memory"


async def test_replicate_cancel_posts_to_the_documented_url():
    api = with_key("replicate")
    with respx.mock(base_url="https://api.replicate.com/v1") as mock:
        mock.post("/predictions").mock(return_value=httpx.Response(201, json=PREDICTION))
        cancel = mock.post(f"/predictions/{PREDICTION['id']}/cancel").mock(
            return_value=httpx.Response(200, json={**PREDICTION, "status": "canceled"})
        )
        async with api.get_client() as client:
            ref = await client.submit(REPLICATE_REQUEST, idempotency_key="docs-cancel")
            assert await client.cancel(ref) is True
    assert cancel.called


# -- AssemblyAI transcripts -------------------------------------------------------------
TRANSCRIPT_ID = "b33f4691-85b7-4f31-be12-a87cef1c1229"
AUDIO = "https://assembly.ai/wildfires.mp3"


def transcript(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": TRANSCRIPT_ID,
        "audio_url": AUDIO,
        "status": status,
        "text": None,
        "error": None,
        **fields,
    }


async def test_assemblyai_transcript_submits_polls_and_returns_its_text():
    api = with_key("assemblyai")
    with respx.mock(base_url="https://api.assemblyai.com/v2") as mock:
        create = mock.post("/transcript").mock(
            return_value=httpx.Response(200, json=transcript("queued"))
        )
        get = mock.get(f"/transcript/{TRANSCRIPT_ID}").mock(
            side_effect=replies(
                transcript("queued"),
                transcript("processing"),
                transcript("completed", text="Smoke from hundreds of wildfires in Canada"),
            )
        )
        async with api.get_client() as client:
            ref = await client.submit({"audio_url": AUDIO}, idempotency_key="docs-2")
            first = await client.poll(ref)
            result = await client.wait_for_result(ref)
    assert ref.job_id == TRANSCRIPT_ID
    assert json.loads(create.calls.last.request.content) == {"audio_url": AUDIO}
    # The key alone in Authorization, as AssemblyAI's curl examples send it.
    assert get.calls.last.request.headers["Authorization"] == KEY
    assert first.state is JobState.PENDING
    assert result.output == "Smoke from hundreds of wildfires in Canada"


async def test_assemblyai_error_status_raises_with_the_error_property():
    api = with_key("assemblyai")
    message = f"Download error, unable to download {AUDIO}"
    with respx.mock(base_url="https://api.assemblyai.com/v2") as mock:
        mock.post("/transcript").mock(return_value=httpx.Response(200, json=transcript("queued")))
        mock.get(f"/transcript/{TRANSCRIPT_ID}").mock(
            return_value=httpx.Response(200, json=transcript("error", error=message))
        )
        async with api.get_client() as client:
            ref = await client.submit({"audio_url": AUDIO}, idempotency_key="docs-3")
            with pytest.raises(JobFailedError) as raised:
                await client.wait_for_result(ref)
            assert await client.cancel(ref) is False  # no cancel endpoint is declared
    assert raised.value.status.error_message == message


# -- RunPod serverless ------------------------------------------------------------------
JOB_ID = "eaebd6e7-6a92-4bb8-a911-f996ac5ea99d"
RUNPOD_URL = "https://api.runpod.ai/v2/ENDPOINT_ID"


async def test_runpod_job_runs_polls_status_and_returns_its_output():
    api = with_key("runpod")
    output = [{"image": "https://image.url", "seed": 46578}]
    with respx.mock(base_url=RUNPOD_URL) as mock:
        run = mock.post("/run").mock(
            return_value=httpx.Response(200, json={"id": JOB_ID, "status": "IN_QUEUE"})
        )
        status = mock.get(f"/status/{JOB_ID}").mock(
            side_effect=replies(
                {"id": JOB_ID, "status": "IN_QUEUE"},
                {"id": JOB_ID, "status": "IN_PROGRESS"},
                {
                    "delayTime": 824,
                    "executionTime": 3391,
                    "id": JOB_ID,
                    "output": output,
                    "status": "COMPLETED",
                },
            )
        )
        async with api.get_client() as client:
            ref = await client.submit({"input": {"prompt": "Your prompt"}}, idempotency_key="d-4")
            seen: list[JobState] = []
            result = await client.wait_for_result(
                ref, on_change=lambda old, new: seen.append(new.state)
            )
    assert ref.job_id == JOB_ID
    assert json.loads(run.calls.last.request.content) == {"input": {"prompt": "Your prompt"}}
    assert status.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    assert seen[-2:] == [JobState.RUNNING, JobState.SUCCEEDED]
    assert result.output == output


@pytest.mark.parametrize(
    "final, error",
    [("FAILED", JobFailedError), ("CANCELLED", JobCancelledError), ("TIMED_OUT", JobExpiredError)],
)
async def test_runpod_terminal_states_raise_typed_errors(final, error):
    api = with_key("runpod")
    with respx.mock(base_url=RUNPOD_URL) as mock:
        mock.post("/run").mock(
            return_value=httpx.Response(200, json={"id": JOB_ID, "status": "IN_QUEUE"})
        )
        mock.get(f"/status/{JOB_ID}").mock(
            return_value=httpx.Response(200, json={"id": JOB_ID, "status": final})
        )
        async with api.get_client() as client:
            ref = await client.submit({"input": {}}, idempotency_key=f"docs-{final}")
            with pytest.raises(error) as raised:
                await client.wait_for_result(ref)
    assert raised.value.status.raw_status == final
