"""Anthropic's Message Batches API, mounted at ``/anthropic``.

``POST /v1/messages/batches`` takes up to 100,000 requests (``custom_id`` +
``params``, 256 MB at most) and answers the batch ``in_progress``; ``GET
/v1/messages/batches/{id}`` reports it, its requests counted in ``processing`` until
the whole batch ends; ``POST .../{id}/cancel`` makes it ``canceling``; once
``ended``, ``results_url`` names ``GET .../{id}/results``, a JSONL stream of one
``succeeded``, ``errored``, ``canceled`` or ``expired`` line per request. ``DELETE
.../{id}`` removes an ended batch; ``GET /v1/messages/batches`` lists them (newest
first, ``after_id``/``before_id``/``limit``). Auth is ``x-api-key: <key>`` or
``Authorization: Bearer <key>`` (the SDK's), and every request needs an
``anthropic-version`` header (any value). A request whose JSON contains "FAIL" ends
``errored`` with an ``invalid_request_error``.

Our choices where the vendor documents nothing:

- Cancelling an ended batch, deleting a batch still processing and asking for the
  results of a batch not ended are 400 ``invalid_request_error`` (never 409, which the
  SDK retries). A batch already canceling is returned unchanged by a new cancel.
- Canceling lasts ``batch_cancelling``; requests finishing meanwhile keep their
  outcome, the others are ``canceled``. ``expires_at`` is ``created_at`` plus 24 h
  scaled by ``time_scale``; a batch drawn to expire (``batch_expire_rate``) ends
  earlier, partway through its requests, whose unfinished ones are ``expired``.
- Random failures (``batch_request_failure_rate``) are ``api_error``. Results are in
  request order, newline-separated with no trailing newline, as
  ``application/x-jsonl``. The version header is checked after the key. An unknown
  ``after_id`` or ``before_id`` is a 400.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from prefect_pollers.testing.simulator.batches import (
    DOOMED,
    SUCCEEDS,
    BatchProvider,
    Line,
    RequestPlan,
    digest,
    newest_first,
    position,
    wall,
)
from prefect_pollers.testing.simulator.errors import Invalid, Refusal
from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Handler, Reply
from prefect_pollers.testing.simulator.validation import an_object, json_object, non_empty_str
from prefect_pollers.testing.simulator.wire import iso_timestamp

BATCHES = "/v1/messages/batches"
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(eq=False)
class _Batch:
    """What a batch keeps beside its job: its requests' ids, models and plan."""

    job: Job
    custom_ids: list[str]
    models: list[str]
    input_tokens: array[int]
    plan: RequestPlan
    cancel_initiated: float | None = None


class AnthropicBatch(BatchProvider):
    """The Anthropic Message Batches API."""

    name = "anthropic-batch"
    status_field = ("processing_status",)
    max_requests = 100_000
    max_body_bytes = 256 * 1024 * 1024

    def reset(self) -> None:
        """Also forget every batch."""
        super().reset()
        self.batches: dict[str, _Batch] = {}

    def routes(self) -> list[Route]:
        """Create, list, retrieve, cancel, results and delete."""
        one = BATCHES + "/{batch_id}"
        return [
            self.route("POST", BATCHES, "submit", self.versioned(self.create_batch)),
            self.route("GET", BATCHES, "list", self.versioned(self.list_batches)),
            self.route("GET", one, "status", self.versioned(self.get_batch)),
            self.route("POST", one + "/cancel", "cancel", self.versioned(self.cancel_batch)),
            self.route("GET", one + "/results", "result", self.versioned(self.get_results)),
            self.route("DELETE", one, "delete", self.versioned(self.delete_batch)),
        ]

    def authorized(self, request: Request) -> bool:
        """``x-api-key: <key>`` or ``Authorization: Bearer <key>``."""
        key = self.config.api_key
        return request.headers.get("x-api-key") == key or (
            request.headers.get("Authorization") == f"Bearer {key}"
        )

    def versioned(self, handler: Handler) -> Handler:
        """``handler``, refusing a request without an ``anthropic-version`` header."""

        async def checked(request: Request) -> Reply:
            """Refuse the request without the header, else handle it."""
            if "anthropic-version" not in request.headers:
                raise Refusal(400, "invalid_request_error", "anthropic-version: header is required")
            return await handler(request)

        return checked

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        """``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
        kind = _TYPES.get(status, "api_error")
        error = {"type": kind, "message": message}
        return {"type": "error", "error": error, "request_id": self.new_id("req_")}

    async def create_batch(self, request: Request) -> Reply:
        """Create a batch; it starts processing at once."""
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else len(await request.body())
        if size > self.max_body_bytes:
            raise Refusal(413, "request_too_large", "Request exceeds the maximum size (256 MB).")
        body = await json_object(request)
        requests = body.get("requests")
        if not isinstance(requests, list) or not 1 <= len(requests) <= self.max_requests:
            raise Invalid("requests", f"must be a list of 1 to {self.max_requests} requests")
        custom_ids: list[str] = []
        models: dict[str, str] = {}
        model_of: list[str] = []
        input_tokens: array[int] = array("I")
        doomed: list[bool] = []
        for index, item in enumerate(requests):
            where = f"requests.{index}."
            if not isinstance(item, dict):
                raise Invalid(where.rstrip("."), "must be an object")
            custom_id = non_empty_str(item, "custom_id", where)
            if not CUSTOM_ID.fullmatch(custom_id):
                raise Invalid(where + "custom_id", "must match ^[a-zA-Z0-9_-]{1,64}$")
            params = an_object(item, "params", where, required=True)
            model = non_empty_str(params, "model", where + "params.")
            max_tokens = params.get("max_tokens")
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise Invalid(where + "params.max_tokens", "must be an integer >= 1")
            if not isinstance(params.get("messages"), list):
                raise Invalid(where + "params.messages", "is required (a list)")
            if params.get("stream"):
                raise Invalid(where + "params.stream", "streaming is not supported in a batch")
            text = json.dumps(item)
            custom_ids.append(custom_id)
            model_of.append(models.setdefault(model, model))
            input_tokens.append(max(1, len(text) // 4))
            doomed.append("FAIL" in text)
        if len(set(custom_ids)) < len(custom_ids):
            raise Invalid("requests", "custom_id values must be unique within a batch")
        plan = self.plan(doomed, running := self.draw(self.config.batch_duration))
        expires_after = self.draw_expiry(plan)
        phases = [("in_progress", running if expires_after is None else expires_after)]
        job = self.new_batch(request, self.new_id("msgbatch_"), phases, "ended")
        plan.start = job.created
        batch = _Batch(job, custom_ids, model_of, input_tokens, plan)
        self.batches[job.id] = batch
        self.batch_stats.batches_by_key[digest(sorted(custom_ids))] += 1
        return Reply(200, self.render(batch, request, job.created))

    async def get_batch(self, request: Request) -> Reply:
        """A batch's status."""
        batch = self.find_batch(request)
        return self.serve_status(batch.job, lambda _, now: self.render(batch, request, now))

    async def cancel_batch(self, request: Request) -> Reply:
        """Start canceling a batch (400 once it ended)."""
        batch = self.find_batch(request)
        now = self.now()
        if batch.job.is_terminal(now):
            raise Refusal(400, "invalid_request_error", f"Batch {batch.job.id} has already ended.")
        if batch.cancel_initiated is None:
            batch.cancel_initiated = now
            batch.plan.stop_at(self.begin_cancel(batch.job, "canceling", "ended"))
        return Reply(200, self.render(batch, request, now))

    async def get_results(self, request: Request) -> Reply:
        """An ended batch's results, streamed as JSONL (400 before it ends)."""
        batch = self.find_batch(request)
        if not batch.job.is_terminal(self.now()):
            raise Refusal(400, "invalid_request_error", f"Batch {batch.job.id} has not ended.")
        return self.stream(self.result_lines(batch), "application/x-jsonl")

    async def delete_batch(self, request: Request) -> Reply:
        """Delete an ended batch (400 while it is processing: cancel it first)."""
        batch = self.find_batch(request)
        if not batch.job.is_terminal(self.now()):
            raise Refusal(400, "invalid_request_error", "Cancel a batch before deleting it.")
        del self.batches[batch.job.id]
        del self.jobs[batch.job.id]
        return Reply(200, {"id": batch.job.id, "type": "message_batch_deleted"})

    async def list_batches(self, request: Request) -> Reply:
        """Batches, newest first, paged by ``after_id`` or ``before_id`` and ``limit``."""
        query = request.query_params
        limit = query.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise Invalid("limit", "must be an integer from 1 to 1000")
        newest = newest_first(self.batches)
        count = int(limit)
        if "before_id" in query:
            end = position(newest, query["before_id"], "before_id")
            start = max(0, end - count)
            page, has_more = newest[start:end], start > 0
        else:
            start = (
                position(newest, query["after_id"], "after_id") + 1 if "after_id" in query else 0
            )
            page, has_more = newest[start : start + count], len(newest) > start + count
        now = self.now()
        data = [self.render(batch, request, now) for batch in page]
        return Reply(
            200,
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    def find_batch(self, request: Request) -> _Batch:
        """The batch the path names, or 404."""
        return self.batches[self.find(request.path_params["batch_id"]).id]

    def render(self, batch: _Batch, request: Request, now: float) -> dict[str, Any]:
        """The MessageBatch at ``now``; ``results_url`` is absolute, from the request."""
        job = batch.job
        status = job.status(now)
        counts = {"processing": len(batch.plan), "succeeded": 0, "errored": 0}
        counts |= {"canceled": 0, "expired": 0}
        results_url = ended_at = None
        if status == "ended":
            succeeded, errored = batch.plan.done(now)
            unfinished = len(batch.plan) - succeeded - errored
            counts = {
                "processing": 0,
                "succeeded": succeeded,
                "errored": errored,
                "canceled": unfinished if batch.cancel_initiated is not None else 0,
                "expired": 0 if batch.cancel_initiated is not None else unfinished,
            }
            base = str(request.base_url).rstrip("/")
            results_url = f"{base}{self.prefix}{BATCHES}/{job.id}/results"
            ended_at = iso_timestamp(wall(job, job.end))
        cancel = batch.cancel_initiated
        return {
            "id": job.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": iso_timestamp(job.created_wall),
            "expires_at": iso_timestamp(job.data["expires_at"]),
            "ended_at": ended_at,
            "archived_at": None,
            "cancel_initiated_at": None if cancel is None else iso_timestamp(wall(job, cancel)),
            "results_url": results_url,
        }

    def result_lines(self, batch: _Batch) -> Iterator[Line]:
        """One result line per request, generated from the plan."""
        plan = batch.plan
        unfinished = {"type": "canceled" if batch.cancel_initiated is not None else "expired"}
        for index, custom_id in enumerate(batch.custom_ids):
            fate = plan.fate(index)
            if not plan.finished(index):
                line = json.dumps({"custom_id": custom_id, "result": unfinished})
            elif fate == SUCCEEDS:
                line = self.succeeded_line(batch, index)
            else:
                kind = "invalid_request_error" if fate == DOOMED else "api_error"
                message = "Simulated failure: the request contains FAIL."
                if fate != DOOMED:
                    message = "Internal server error."
                error = {
                    "type": "error",
                    "error": {"type": kind, "message": message},
                    "request_id": None,
                }
                result = {"type": "errored", "error": error}
                line = json.dumps({"custom_id": custom_id, "result": result})
            yield line, plan.malformed(index)

    def succeeded_line(self, batch: _Batch, index: int) -> str:
        """A succeeded result: a Message, its text padded to ``batch_result_bytes``."""
        custom_id = batch.custom_ids[index]
        input_tokens = batch.input_tokens[index]
        message_id = f"msg_{digest([batch.job.id, str(index)])}"

        def build(text: str, output_tokens: int) -> dict[str, Any]:
            """The result line of a message answering ``text``."""
            message = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": batch.models[index],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "service_tier": "batch",
                },
            }
            return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}

        return self.padded(build, f"Simulated answer to {custom_id}.")
