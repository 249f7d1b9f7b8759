"""The OpenAI Batch and Anthropic Message Batches simulations, in process, on a manual clock.

Every JSON object they send is checked with the vendors' SDK models (or, for the OpenAI
output line and error body, which the SDK does not type, a mirror of the spec), and
each is driven once end to end with the real async SDK client.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from anthropic.types import ErrorResponse
from anthropic.types.messages import (
    DeletedMessageBatch,
    MessageBatch,
    MessageBatchIndividualResponse,
)
from openai.types import Batch, CreateEmbeddingResponse, FileDeleted, FileObject
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.types import Message

from prefect_pollers.testing.simulator import (
    FaultRule,
    ManualClock,
    SimulatedReset,
    SimulatorConfig,
    SimulatorState,
)
from prefect_pollers.testing.simulator.anthropic_batch import AnthropicBatch
from prefect_pollers.testing.simulator.app import SIMULATED
from prefect_pollers.testing.simulator.openai_batch import OpenAIBatch
from prefect_pollers.testing.simulator.provider import Provider

OPENAI = "/openai/v1"
ANTHROPIC = "/anthropic/v1/messages/batches"
BEARER = {"Authorization": "Bearer sim-key"}
CLAUDE = {"x-api-key": "sim-key", "anthropic-version": "2023-06-01"}
TIMING: dict[str, Any] = {
    "batch_duration": (100.0, 100.0),
    "openai_batch_validating": (10.0, 10.0),
    "openai_batch_finalizing": (5.0, 5.0),
    "batch_cancelling": (4.0, 4.0),
}


# -- mirrors of the spec where the OpenAI SDK has no type -----------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OutResponse(_Strict):
    status_code: int
    request_id: str
    body: dict[str, Any]


class _OutError(_Strict):
    code: str
    message: str


class OutputLine(_Strict):
    """``BatchRequestOutput``: a line of an output or error file."""

    id: str
    custom_id: str
    response: _OutResponse | None
    error: _OutError | None


class _ErrorInner(_Strict):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(_Strict):
    """``ErrorResponse``."""

    error: _ErrorInner


class BatchList(_Strict):
    """``ListBatchesResponse``."""

    object: str
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


# -- helpers --------------------------------------------------------------------------


@asynccontextmanager
async def mounted(
    kind: type[Provider], clock: ManualClock, *faults: FaultRule, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """One batch provider at its prefix, served in process, and a client for it."""
    state = SimulatorState(SimulatorConfig(faults=list(faults), **settings), clock)
    provider = kind(state, OPENAI if kind is OpenAIBatch else "/anthropic")
    state.add(provider)
    transport = httpx.ASGITransport(app=Starlette(routes=provider.routes()))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client, provider


def jsonl(*lines: dict[str, Any] | str) -> bytes:
    """An input file: dicts are dumped, strings written as they are."""
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


def chat(custom_id: str, text: str = "2+2?", **overrides: Any) -> dict[str, Any]:
    """One chat-completions request line."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return line | overrides


def claude(custom_id: str, text: str = "Capital of France?") -> dict[str, Any]:
    """One Message Batches request."""
    params = {
        "model": "claude-opus-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
    }
    return {"custom_id": custom_id, "params": params}


async def upload(client: httpx.AsyncClient, content: bytes) -> FileObject:
    """Upload a batch input file."""
    response = await client.post(
        f"{OPENAI}/files",
        files={"file": ("input.jsonl", content)},
        data={"purpose": "batch"},
        headers=BEARER,
    )
    assert response.status_code == 200, response.text
    return FileObject.model_validate(response.json())


async def create_openai(
    client: httpx.AsyncClient,
    content: bytes,
    endpoint: str = "/v1/chat/completions",
    metadata: dict[str, str] | None = None,
) -> Batch:
    """Upload ``content`` and create a batch from it."""
    file = await upload(client, content)
    body = {"input_file_id": file.id, "endpoint": endpoint, "completion_window": "24h"}
    response = await client.post(
        f"{OPENAI}/batches", json=body | {"metadata": metadata}, headers=BEARER
    )
    assert response.status_code == 200, response.text
    return Batch.model_validate(response.json())


async def get_openai(client: httpx.AsyncClient, batch_id: str) -> Batch:
    """Poll a batch."""
    response = await client.get(f"{OPENAI}/batches/{batch_id}", headers=BEARER)
    assert response.status_code == 200, response.text
    return Batch.model_validate(response.json())


async def file_lines(client: httpx.AsyncClient, file_id: str | None) -> list[OutputLine]:
    """The lines of an output or error file, checked against the spec's shape."""
    assert file_id is not None
    meta = FileObject.model_validate(
        (await client.get(f"{OPENAI}/files/{file_id}", headers=BEARER)).json()
    )
    content = await client.get(f"{OPENAI}/files/{file_id}/content", headers=BEARER)
    assert content.headers["content-type"] == "application/octet-stream"
    assert meta.purpose == "batch_output" and meta.bytes == len(content.content)
    return [OutputLine.model_validate_json(line) for line in content.text.split("\n")]


def openai_error(response: httpx.Response, status: int) -> OpenAIErrorBody:
    """Check an OpenAI error response."""
    assert response.status_code == status, response.text
    return OpenAIErrorBody.model_validate(response.json())


async def create_claude(client: httpx.AsyncClient, requests: list[dict[str, Any]]) -> MessageBatch:
    """Create a Message Batch."""
    response = await client.post(ANTHROPIC, json={"requests": requests}, headers=CLAUDE)
    assert response.status_code == 200, response.text
    return MessageBatch.model_validate(response.json())


async def get_claude(client: httpx.AsyncClient, batch_id: str) -> MessageBatch:
    """Poll a Message Batch."""
    response = await client.get(f"{ANTHROPIC}/{batch_id}", headers=CLAUDE)
    assert response.status_code == 200, response.text
    return MessageBatch.model_validate(response.json())


async def claude_results(
    client: httpx.AsyncClient, batch_id: str
) -> list[MessageBatchIndividualResponse]:
    """An ended batch's results: no blank line, no trailing newline."""
    response = await client.get(f"{ANTHROPIC}/{batch_id}/results", headers=CLAUDE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-jsonl"
    lines = response.text.split("\n")
    assert all(lines)
    return [MessageBatchIndividualResponse.model_validate_json(line) for line in lines]


def claude_error(response: httpx.Response, status: int, kind: str) -> None:
    """Check an Anthropic error response."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["type"] == kind
    if kind != "request_too_large":  # not among the SDK's ErrorObject types
        ErrorResponse.model_validate(body)


# -- OpenAI -----------------------------------------------------------------------------


def test_both_batch_simulations_are_known_to_the_app() -> None:
    assert SIMULATED["openai-batch"] is OpenAIBatch
    assert SIMULATED["anthropic-batch"] is AnthropicBatch


async def test_openai_batch_walks_its_lifecycle_with_growing_counts() -> None:
    clock = ManualClock()
    async with mounted(OpenAIBatch, clock, **TIMING) as (client, provider):
        content = jsonl(*(chat(f"req-{i}") for i in range(19)), "", chat("req-19", "FAIL"))
        file = await upload(client, content)
        assert (file.purpose, file.bytes, file.filename) == ("batch", len(content), "input.jsonl")
        again = await client.get(f"{OPENAI}/files/{file.id}", headers=BEARER)
        assert FileObject.model_validate(again.json()) == file
        raw = await client.get(f"{OPENAI}/files/{file.id}/content", headers=BEARER)
        assert raw.content == content

        batch = await create_openai(client, content, metadata={"idempotency_key": "k1"})
        assert batch.status == "validating" and batch.request_counts is not None
        assert batch.request_counts.total == 0 and batch.output_file_id is None
        assert batch.expires_at == batch.created_at + 86_400
        assert batch.metadata == {"idempotency_key": "k1"} and batch.model == "gpt-4o-mini"

        seen, done = [], []
        for _ in range(12):
            clock.advance(10)
            polled = await get_openai(client, batch.id)
            assert polled.request_counts is not None
            seen.append(polled.status)
            done.append(polled.request_counts.completed + polled.request_counts.failed)
        assert seen[0] == "in_progress" and seen[-1] == "completed"
        assert "finalizing" in seen and done == sorted(done) and 0 < done[3] < 20
        assert polled.request_counts is not None
        assert (polled.request_counts.total, polled.request_counts.completed) == (20, 19)
        assert polled.request_counts.failed == 1
        assert polled.in_progress_at == batch.created_at + 10
        assert polled.finalizing_at == batch.created_at + 110
        assert polled.completed_at == batch.created_at + 115

        output = await file_lines(client, polled.output_file_id)
        assert [line.custom_id for line in output] == [f"req-{i}" for i in range(19)]
        for line in output:
            assert line.error is None and line.response is not None
            assert line.response.status_code == 200 and line.id.startswith("batch_req_")
            completion = ChatCompletion.model_validate(line.response.body)
            assert completion.choices[0].message.content
        (failed,) = await file_lines(client, polled.error_file_id)
        assert failed.custom_id == "req-19" and failed.response is not None
        assert failed.response.status_code == 400
        error = OpenAIErrorBody.model_validate(failed.response.body).error
        assert error.type == "invalid_request_error"

        stats = provider.snapshot()
        assert stats["batches_created"] == 1 and stats["files_uploaded"] == 2
        assert stats["batches_by_key"] == {"k1": 1} and stats["status_calls_max"] == 12
        assert stats["status_calls"] == 12 and stats["outcomes"] == {"completed": 1}
        assert stats["results_bytes_served"] > 0 and stats["malformed_lines_written"] == 0


async def test_openai_batch_fails_validation_with_one_based_lines() -> None:
    clock = ManualClock()
    async with mounted(OpenAIBatch, clock, **TIMING) as (client, provider):
        content = jsonl(
            chat("a"),
            "{not json",
            {"method": "POST", "url": "/v1/chat/completions", "body": {}},
            chat("a"),
            "",
            chat("b", method="GET"),
            chat("c", url="/v1/embeddings"),
        )
        batch = await create_openai(client, content)
        clock.advance(10)
        failed = await get_openai(client, batch.id)
        assert failed.status == "failed" and failed.failed_at == batch.created_at + 10
        assert failed.errors is not None and failed.errors.data is not None
        assert [(e.code, e.line) for e in failed.errors.data] == [
            ("invalid_json_line", 2),
            ("missing_custom_id", 3),
            ("duplicate_custom_id", 4),
            ("invalid_method", 6),
            ("mismatched_endpoint", 7),
        ]
        assert failed.output_file_id is None and failed.error_file_id is None

        assert OpenAIBatch.max_requests == 50_000
        provider.max_requests = 3
        too_many = await create_openai(client, jsonl(*[chat(f"r{i}") for i in range(4)]))
        clock.advance(10)
        errors = (await get_openai(client, too_many.id)).errors
        assert errors is not None and errors.data is not None
        assert [(e.code, e.line) for e in errors.data] == [("too_many_requests", 4)]


async def test_openai_refusals_are_400_404_or_401_in_the_error_shape() -> None:
    async with mounted(OpenAIBatch, ManualClock(), **TIMING) as (client, _):
        file = await upload(client, jsonl(chat("a")))
        good = {"input_file_id": file.id, "endpoint": "/v1/chat/completions"}
        good["completion_window"] = "24h"
        for change in (
            {"input_file_id": "file-nope"},
            {"endpoint": "/v1/videos"},
            {"completion_window": "1h"},
            {"metadata": {"k": 1}},
            {"metadata": {str(i): "v" for i in range(17)}},
        ):
            response = await client.post(f"{OPENAI}/batches", json=good | change, headers=BEARER)
            assert openai_error(response, 400).error.type == "invalid_request_error"
        response = await client.post(f"{OPENAI}/batches", content=b"[", headers=BEARER)
        openai_error(response, 400)
        response = await client.post(
            f"{OPENAI}/files", files={"file": ("x.jsonl", b"{}")}, data={"purpose": "fine-tune"}
        )
        assert openai_error(response, 401).error.code == "invalid_api_key"
        response = await client.post(
            f"{OPENAI}/files",
            data={"purpose": "batch"},
            files={"other": ("x", b"")},
            headers=BEARER,
        )
        openai_error(response, 400)
        openai_error(await client.get(f"{OPENAI}/batches/batch_nope", headers=BEARER), 404)
        openai_error(await client.get(f"{OPENAI}/files/file-nope", headers=BEARER), 404)


@pytest.mark.parametrize("cancel_lines", ["omit", "batch_cancelled"])
async def test_openai_cancel_keeps_the_finished_requests(cancel_lines: str) -> None:
    clock = ManualClock()
    settings = TIMING | {"openai_batch_cancel_lines": cancel_lines}
    async with mounted(OpenAIBatch, clock, **settings) as (client, provider):
        batch = await create_openai(client, jsonl(*(chat(f"req-{i}") for i in range(40))))
        clock.advance(50)
        response = await client.post(f"{OPENAI}/batches/{batch.id}/cancel", headers=BEARER)
        cancelling = Batch.model_validate(response.json())
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        again = await client.post(f"{OPENAI}/batches/{batch.id}/cancel", headers=BEARER)
        assert Batch.model_validate(again.json()).status == "cancelling"
        clock.advance(4)
        cancelled = await get_openai(client, batch.id)
        assert cancelled.status == "cancelled" and cancelled.finalizing_at is None
        assert cancelled.cancelled_at == cancelled.cancelling_at + 4
        counts = cancelled.request_counts
        assert counts is not None and 0 < counts.completed < 40

        output = await file_lines(client, cancelled.output_file_id)
        assert len(output) == counts.completed
        if cancel_lines == "omit":
            assert cancelled.error_file_id is None and counts.failed == 0
        else:
            errors = await file_lines(client, cancelled.error_file_id)
            assert counts.failed == len(errors) == 40 - counts.completed
            assert {line.error.code for line in errors if line.error} == {"batch_cancelled"}
        response = await client.post(f"{OPENAI}/batches/{batch.id}/cancel", headers=BEARER)
        openai_error(response, 400)
        assert provider.snapshot()["cancels"] == 1


async def test_openai_cancel_while_validating_runs_nothing() -> None:
    clock = ManualClock()
    async with mounted(OpenAIBatch, clock, **TIMING) as (client, _):
        batch = await create_openai(client, jsonl(chat("a"), chat("b")))
        clock.advance(5)
        await client.post(f"{OPENAI}/batches/{batch.id}/cancel", headers=BEARER)
        clock.advance(10)
        cancelled = await get_openai(client, batch.id)
        assert cancelled.status == "cancelled" and cancelled.in_progress_at is None
        assert cancelled.output_file_id is None and cancelled.error_file_id is None


async def test_openai_expired_batch_writes_batch_expired_lines() -> None:
    clock = ManualClock()
    async with mounted(OpenAIBatch, clock, batch_expire_rate=1.0, **TIMING) as (client, _):
        batch = await create_openai(client, jsonl(*(chat(f"req-{i}") for i in range(30))))
        clock.advance(200)
        expired = await get_openai(client, batch.id)
        assert expired.status == "expired" and expired.expired_at is not None
        assert expired.completed_at is None and expired.finalizing_at is None
        counts = expired.request_counts
        assert counts is not None and counts.completed + counts.failed == 30
        assert 0 < counts.completed < 30
        output = await file_lines(client, expired.output_file_id)
        errors = await file_lines(client, expired.error_file_id)
        assert len(output) == counts.completed and len(errors) == counts.failed
        for line in errors:
            assert line.response is None and line.error is not None
            assert line.error.code == "batch_expired"
        ids = {line.custom_id for line in output + errors}
        assert ids == {f"req-{i}" for i in range(30)}

        cancelled = await create_openai(client, jsonl(*(chat(f"req-{i}") for i in range(30))))
        clock.advance(20)
        await client.post(f"{OPENAI}/batches/{cancelled.id}/cancel", headers=BEARER)
        clock.advance(4)
        done = await get_openai(client, cancelled.id)
        assert (done.status, done.expired_at, done.error_file_id) == ("cancelled", None, None)


async def test_openai_random_failures_leave_no_output_file_and_embeddings_validate() -> None:
    clock = ManualClock()
    async with mounted(OpenAIBatch, clock, batch_request_failure_rate=1.0, **TIMING) as (
        client,
        provider,
    ):
        batch = await create_openai(client, jsonl(chat("a"), chat("b")))
        clock.advance(200)
        done = await get_openai(client, batch.id)
        assert done.status == "completed" and done.output_file_id is None
        for line in await file_lines(client, done.error_file_id):
            assert line.response is not None and line.response.status_code == 500
            body = OpenAIErrorBody.model_validate(line.response.body)
            assert body.error.type == "server_error"

        provider.state.config = SimulatorConfig(**TIMING)
        embed = {"model": "text-embedding-3-small", "input": "hello"}
        line = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": embed}
        batch = await create_openai(client, jsonl(line), endpoint="/v1/embeddings")
        clock.advance(200)
        (output,) = await file_lines(client, (await get_openai(client, batch.id)).output_file_id)
        assert output.response is not None
        embedding = CreateEmbeddingResponse.model_validate(output.response.body)
        assert len(embedding.data[0].embedding) == 8


async def test_openai_lists_newest_first_and_deletes_files() -> None:
    clock = ManualClock()
    async with mounted(OpenAIBatch, clock, **TIMING) as (client, provider):
        created = []
        for key in ("a", "b", "a"):
            batch = await create_openai(client, jsonl(chat("x")), metadata={"idempotency_key": key})
            created.append(batch.id)
            clock.advance(1)
        first = await client.get(f"{OPENAI}/batches", params={"limit": 2}, headers=BEARER)
        page = BatchList.model_validate(first.json())
        assert [b.id for b in page.data] == created[::-1][:2] and page.has_more
        assert (page.first_id, page.last_id) == (created[2], created[1])
        rest = await client.get(f"{OPENAI}/batches", params={"after": page.last_id}, headers=BEARER)
        page = BatchList.model_validate(rest.json())
        assert [b.id for b in page.data] == [created[0]] and not page.has_more
        bad = await client.get(f"{OPENAI}/batches", params={"limit": 0}, headers=BEARER)
        openai_error(bad, 400)
        assert provider.snapshot()["batches_by_key"] == {"a": 2, "b": 1}

        file = await upload(client, jsonl(chat("y")))
        deleted = await client.delete(f"{OPENAI}/files/{file.id}", headers=BEARER)
        assert FileDeleted.model_validate(deleted.json()).deleted
        openai_error(await client.get(f"{OPENAI}/files/{file.id}", headers=BEARER), 404)
        assert provider.snapshot()["files_deleted"] == 1


# -- Anthropic --------------------------------------------------------------------------


async def test_anthropic_batch_counts_processing_until_it_ends() -> None:
    clock = ManualClock()
    async with mounted(AnthropicBatch, clock, **TIMING) as (client, provider):
        requests = [claude(f"req-{i}") for i in range(9)] + [claude("req-9", "FAIL please")]
        batch = await create_claude(client, requests)
        assert batch.processing_status == "in_progress" and batch.results_url is None
        assert batch.request_counts.processing == 10 and batch.id.startswith("msgbatch_")
        assert (batch.expires_at - batch.created_at).total_seconds() == 86_400

        clock.advance(50)
        running = await get_claude(client, batch.id)
        assert running.request_counts.processing == 10 and running.ended_at is None
        early = await client.get(f"{ANTHROPIC}/{batch.id}/results", headers=CLAUDE)
        claude_error(early, 400, "invalid_request_error")
        busy = await client.delete(f"{ANTHROPIC}/{batch.id}", headers=CLAUDE)
        claude_error(busy, 400, "invalid_request_error")

        clock.advance(50)
        ended = await get_claude(client, batch.id)
        assert ended.processing_status == "ended" and ended.ended_at is not None
        assert ended.request_counts.model_dump() == {
            "processing": 0,
            "succeeded": 9,
            "errored": 1,
            "canceled": 0,
            "expired": 0,
        }
        assert ended.results_url == f"http://sim{ANTHROPIC}/{batch.id}/results"
        results = await claude_results(client, batch.id)
        assert [r.custom_id for r in results] == [f"req-{i}" for i in range(10)]
        assert {r.result.type for r in results[:9]} == {"succeeded"}
        errored = results[9].result
        assert errored.type == "errored"
        assert errored.error.error.type == "invalid_request_error"
        succeeded = results[0].result
        assert succeeded.type == "succeeded"
        assert succeeded.message.usage.service_tier == "batch"

        deleted = await client.delete(f"{ANTHROPIC}/{batch.id}", headers=CLAUDE)
        assert DeletedMessageBatch.model_validate(deleted.json()).id == batch.id
        gone = await client.get(f"{ANTHROPIC}/{batch.id}", headers=CLAUDE)
        claude_error(gone, 404, "not_found_error")
        stats = provider.snapshot()
        assert stats["batches_created"] == 1 and stats["status_calls_max"] == 2
        assert stats["outcomes"] == {"ended": 1}


async def test_anthropic_auth_and_version_headers() -> None:
    async with mounted(AnthropicBatch, ManualClock(), **TIMING) as (client, _):
        body = {"requests": [claude("a")]}
        bearer = {"Authorization": "Bearer sim-key", "anthropic-version": "2026-10-21"}
        assert (await client.post(ANTHROPIC, json=body, headers=bearer)).status_code == 200
        assert (await client.post(ANTHROPIC, json=body, headers=CLAUDE)).status_code == 200
        no_key = await client.post(ANTHROPIC, json=body, headers={"anthropic-version": "x"})
        claude_error(no_key, 401, "authentication_error")
        no_version = await client.post(ANTHROPIC, json=body, headers={"x-api-key": "sim-key"})
        claude_error(no_version, 400, "invalid_request_error")


async def test_anthropic_limits_are_refused_at_create() -> None:
    async with mounted(AnthropicBatch, ManualClock(), **TIMING) as (client, provider):
        assert (AnthropicBatch.max_requests, AnthropicBatch.max_body_bytes) == (100_000, 2**28)
        provider.max_requests = 3
        bad_tokens = claude("a")
        bad_tokens["params"]["max_tokens"] = 0
        for requests in (
            [],
            [claude("a")] * 2,
            [claude("has space")],
            [claude("x" * 65)],
            [bad_tokens],
            [{"custom_id": "a"}],
            [claude(f"r{i}") for i in range(4)],
        ):
            response = await client.post(ANTHROPIC, json={"requests": requests}, headers=CLAUDE)
            claude_error(response, 400, "invalid_request_error")
        provider.max_body_bytes = 100
        response = await client.post(
            ANTHROPIC, json={"requests": [claude("a"), claude("b")]}, headers=CLAUDE
        )
        claude_error(response, 413, "request_too_large")
        assert provider.snapshot()["batches_created"] == 0


async def test_anthropic_cancel_marks_the_unfinished_canceled() -> None:
    clock = ManualClock()
    async with mounted(AnthropicBatch, clock, **TIMING) as (client, _):
        batch = await create_claude(client, [claude(f"r{i}") for i in range(40)])
        clock.advance(40)
        response = await client.post(f"{ANTHROPIC}/{batch.id}/cancel", headers=CLAUDE)
        canceling = MessageBatch.model_validate(response.json())
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None and canceling.results_url is None
        clock.advance(4)
        ended = await get_claude(client, batch.id)
        counts = ended.request_counts
        assert ended.processing_status == "ended" and counts.expired == 0
        assert 0 < counts.canceled < 40 and counts.succeeded + counts.canceled == 40
        results = await claude_results(client, batch.id)
        kinds = [r.result.type for r in results]
        assert kinds.count("canceled") == counts.canceled
        again = await client.post(f"{ANTHROPIC}/{batch.id}/cancel", headers=CLAUDE)
        claude_error(again, 400, "invalid_request_error")


async def test_anthropic_expired_batch_has_expired_results() -> None:
    clock = ManualClock()
    async with mounted(AnthropicBatch, clock, batch_expire_rate=1.0, **TIMING) as (client, _):
        batch = await create_claude(client, [claude(f"r{i}") for i in range(30)])
        clock.advance(100)
        counts = (await get_claude(client, batch.id)).request_counts
        assert 0 < counts.expired < 30 and counts.succeeded + counts.expired == 30
        results = await claude_results(client, batch.id)
        assert [r.result.type for r in results].count("expired") == counts.expired


async def test_anthropic_lists_with_after_and_before_ids() -> None:
    clock = ManualClock()
    async with mounted(AnthropicBatch, clock, **TIMING) as (client, provider):
        ids = []
        for custom_ids in (["a"], ["b", "a"], ["a", "b"], ["c"]):
            ids.append((await create_claude(client, [claude(c) for c in custom_ids])).id)
        newest = ids[::-1]

        async def page(**params: Any) -> tuple[list[str], bool, str | None, str | None]:
            response = await client.get(ANTHROPIC, params=params, headers=CLAUDE)
            body = response.json()
            batches = [MessageBatch.model_validate(item).id for item in body["data"]]
            return batches, body["has_more"], body["first_id"], body["last_id"]

        assert await page(limit=2) == (newest[:2], True, newest[0], newest[1])
        assert await page(limit=2, after_id=newest[1]) == (newest[2:], False, newest[2], newest[3])
        assert await page(limit=1, before_id=newest[2]) == ([newest[1]], True, newest[1], newest[1])
        assert (await page())[0] == newest
        bad = await client.get(ANTHROPIC, params={"after_id": "msgbatch_x"}, headers=CLAUDE)
        claude_error(bad, 400, "invalid_request_error")
        keys = provider.snapshot()["batches_by_key"]
        assert sorted(keys.values()) == [1, 1, 2]


async def test_anthropic_pads_results_and_fails_at_random() -> None:
    clock = ManualClock()
    settings = TIMING | {"batch_result_bytes": 2048, "batch_request_failure_rate": 0.5}
    async with mounted(AnthropicBatch, clock, **settings) as (client, _):
        batch = await create_claude(client, [claude(f"r{i}") for i in range(40)])
        clock.advance(100)
        response = await client.get(f"{ANTHROPIC}/{batch.id}/results", headers=CLAUDE)
        lines = response.text.split("\n")
        results = [MessageBatchIndividualResponse.model_validate_json(line) for line in lines]
        sizes = [
            len(line)
            for line, r in zip(lines, results, strict=True)
            if r.result.type == "succeeded"
        ]
        errored = [r.result for r in results if r.result.type == "errored"]
        assert 5 < len(errored) < 35 and set(sizes) == {2048}
        assert {e.error.error.type for e in errored if e.type == "errored"} == {"api_error"}


# -- both -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [OpenAIBatch, AnthropicBatch])
async def test_malformed_lines_are_broken_one_by_one(kind: type[Provider]) -> None:
    clock = ManualClock()
    settings = TIMING | {"batch_malformed_line_rate": 0.3}
    async with mounted(kind, clock, **settings) as (client, provider):
        if kind is OpenAIBatch:
            batch = await create_openai(client, jsonl(*(chat(f"r{i}") for i in range(50))))
            clock.advance(200)
            output_file_id = (await get_openai(client, batch.id)).output_file_id
            url = f"{OPENAI}/files/{output_file_id}/content"
            response = await client.get(url, headers=BEARER)
            model: type[BaseModel] = OutputLine
        else:
            batch_id = (await create_claude(client, [claude(f"r{i}") for i in range(50)])).id
            clock.advance(100)
            response = await client.get(f"{ANTHROPIC}/{batch_id}/results", headers=CLAUDE)
            model = MessageBatchIndividualResponse
    broken = []
    for index, line in enumerate(response.text.split("\n")):
        try:
            model.model_validate_json(line)
        except ValueError:
            assert f'"custom_id": "r{index}"' in line
            broken.append(index)
    assert 5 < len(broken) < 30
    assert provider.snapshot()["malformed_lines_written"] == len(broken)


async def test_same_seed_same_batches() -> None:
    async def run() -> tuple[str, str]:
        clock = ManualClock()
        async with mounted(OpenAIBatch, clock, seed=3, batch_request_failure_rate=0.3) as (
            client,
            _,
        ):
            batch = await create_openai(client, jsonl(*(chat(f"r{i}") for i in range(20))))
            clock.advance(1000)
            done = await get_openai(client, batch.id)
            content = await client.get(
                f"{OPENAI}/files/{done.error_file_id}/content", headers=BEARER
            )
            return batch.id, content.text

    assert await run() == await run()


async def drain(app: Starlette, path: str, headers: dict[str, str]) -> tuple[list[int], int]:
    """GET ``path`` straight through the ASGI app, keeping only the sizes of the chunks.

    Returns:
        The chunk sizes, and the peak of memory allocated while the first 50 chunks
        were made (tracing all of them would take long: the stream is uniform).
    """
    sizes: list[int] = []
    peak = 0
    asked = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal peak
        if message["type"] == "http.response.body":
            sizes.append(len(message.get("body", b"")))
        if len(sizes) == 50:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": ("sim", 80),
        "client": ("127.0.0.1", 1),
    }
    tracemalloc.start()
    try:
        await app(scope, receive, send)
    finally:
        tracemalloc.stop()
    return sizes, peak


async def test_a_large_output_streams_in_small_chunks() -> None:
    clock = ManualClock()
    settings = TIMING | {"batch_result_bytes": 2048}
    async with mounted(OpenAIBatch, clock, **settings) as (client, provider):
        batch = await create_openai(client, jsonl(*(chat(f"req-{i}") for i in range(20_000))))
        clock.advance(200)
        output_file_id = (await get_openai(client, batch.id)).output_file_id
        app = Starlette(routes=provider.routes())
        sizes, peak = await drain(app, f"{OPENAI}/files/{output_file_id}/content", BEARER)
    total = sum(sizes)
    assert total == 20_000 * 2048 + 19_999  # lines of 2048 bytes and the newlines between
    assert max(sizes) < 70_000 and 0 < peak < 1_000_000
    assert provider.snapshot()["results_bytes_served"] == total


@pytest.mark.parametrize(
    ("kind", "rule", "target"),
    [
        (OpenAIBatch, FaultRule(route="status", kind="burst_429", first=2), "status"),
        (OpenAIBatch, FaultRule(route="upload", kind="http_503", first=2), "upload"),
        (AnthropicBatch, FaultRule(route="status", kind="malformed_json", first=2), "status"),
        (AnthropicBatch, FaultRule(route="submit", kind="burst_429", first=2), "submit"),
    ],
)
async def test_faults_hit_the_batch_routes(
    kind: type[Provider], rule: FaultRule, target: str
) -> None:
    clock = ManualClock()
    async with mounted(kind, clock, **TIMING) as (client, provider):
        if kind is OpenAIBatch:
            batch_id = (await create_openai(client, jsonl(chat("a")))).id
            upload_file = {"files": {"file": ("a.jsonl", jsonl(chat("a")))}}
            upload_file["data"] = {"purpose": "batch"}
            requests = {
                "status": ("GET", f"{OPENAI}/batches/{batch_id}", {}),
                "upload": ("POST", f"{OPENAI}/files", upload_file),
            }
            headers = BEARER
        else:
            batch_id = (await create_claude(client, [claude("a")])).id
            requests = {
                "status": ("GET", f"{ANTHROPIC}/{batch_id}", {}),
                "submit": ("POST", ANTHROPIC, {"json": {"requests": [claude("a")]}}),
            }
            headers = CLAUDE
        provider.state.config = SimulatorConfig(faults=[rule], **TIMING)
        method, url, extra = requests[target]
        responses = [await client.request(method, url, headers=headers, **extra) for _ in range(3)]
    expected = {"burst_429": 429, "http_503": 503, "malformed_json": 200}[rule.kind]
    assert [r.status_code for r in responses] == [expected, expected, 200]
    if rule.kind == "burst_429":
        assert responses[0].headers["Retry-After"] == "1"
    if rule.kind == "malformed_json":
        with pytest.raises(ValueError):
            responses[0].json()
    json.loads(responses[2].content)
    assert provider.snapshot()["faults_injected"] == {rule.kind: 2}


async def test_a_connection_reset_on_the_results_route() -> None:
    clock = ManualClock()
    rule = FaultRule(provider="anthropic-batch", route="result", kind="reset", first=1)
    async with mounted(AnthropicBatch, clock, rule, **TIMING) as (client, _):
        batch = await create_claude(client, [claude("a")])
        clock.advance(100)
        with pytest.raises(SimulatedReset):
            await client.get(f"{ANTHROPIC}/{batch.id}/results", headers=CLAUDE)
        assert len(await claude_results(client, batch.id)) == 1


# -- the real SDK clients ---------------------------------------------------------------


def sdk_http(provider: Provider) -> httpx2.AsyncClient:
    """An httpx2 client (what the SDKs are built on) that serves ``provider`` in process."""
    app = Starlette(routes=provider.routes())
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))


async def test_the_openai_sdk_runs_a_batch_on_the_simulator() -> None:
    clock = ManualClock()
    async with mounted(OpenAIBatch, clock, **TIMING) as (_, provider):
        http = sdk_http(provider)
        sdk = openai.AsyncOpenAI(
            base_url=f"http://sim{OPENAI}", api_key="sim-key", http_client=http, max_retries=0
        )
        async with sdk:
            content = jsonl(chat("a"), chat("b", "FAIL"))
            file = await sdk.files.create(file=("in.jsonl", content), purpose="batch")
            assert (await sdk.files.retrieve(file.id)).bytes == len(content)
            batch = await sdk.batches.create(
                input_file_id=file.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"idempotency_key": "sdk"},
            )
            assert [b.id async for b in sdk.batches.list(limit=1)] == [batch.id]
            clock.advance(200)
            done = await sdk.batches.retrieve(batch.id)
            assert done.status == "completed" and done.output_file_id and done.error_file_id
            output = (await sdk.files.content(done.output_file_id)).text
            assert json.loads(output)["custom_id"] == "a"
            errors = (await sdk.files.content(done.error_file_id)).text
            assert json.loads(errors)["response"]["status_code"] == 400
            assert (await sdk.files.delete(file.id)).deleted

            again = await sdk.files.create(file=("again.jsonl", content), purpose="batch")
            other = await sdk.batches.create(
                input_file_id=again.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            assert other.status == "validating"
            cancelling = await sdk.batches.cancel(other.id)
            assert cancelling.status == "cancelling"
            with pytest.raises(openai.BadRequestError):
                await sdk.batches.cancel(batch.id)


async def test_the_anthropic_sdk_runs_a_batch_on_the_simulator() -> None:
    clock = ManualClock()
    async with mounted(AnthropicBatch, clock, **TIMING) as (_, provider):
        http = sdk_http(provider)
        sdk = anthropic.AsyncAnthropic(
            base_url="http://sim/anthropic", api_key="sim-key", http_client=http, max_retries=0
        )
        async with sdk:
            batch = await sdk.messages.batches.create(requests=[claude("a"), claude("b", "FAIL")])
            assert batch.processing_status == "in_progress"
            assert [b.id async for b in sdk.messages.batches.list(limit=5)] == [batch.id]
            clock.advance(100)
            ended = await sdk.messages.batches.retrieve(batch.id)
            assert ended.processing_status == "ended"
            results = [r async for r in await sdk.messages.batches.results(batch.id)]
            assert [(r.custom_id, r.result.type) for r in results] == [
                ("a", "succeeded"),
                ("b", "errored"),
            ]
            deleted = await sdk.messages.batches.delete(batch.id)
            assert deleted.type == "message_batch_deleted"

            other = await sdk.messages.batches.create(requests=[claude("c")])
            assert (await sdk.messages.batches.cancel(other.id)).processing_status == "canceling"
            with pytest.raises(anthropic.NotFoundError):
                await sdk.messages.batches.retrieve(batch.id)
