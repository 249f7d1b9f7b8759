"""OpenAI's Batch API with its Files API, mounted at ``/openai/v1``.

Upload a JSONL file (``POST /files``, multipart, ``purpose=batch``), create a batch
from it (``POST /batches``), poll ``GET /batches/{id}`` through ``validating`` ->
``in_progress`` -> ``finalizing`` -> ``completed`` (or ``failed`` when the file breaks
a rule, ``cancelling`` -> ``cancelled``, ``expired``), then download the output and
error files (``GET /files/{id}/content``). ``Authorization: Bearer <key>``; errors are
``{"error": {"message", "type", "param", "code"}}``; a request in the wrong state is
answered 400, never 409 (which the SDK retries). A request line containing "FAIL"
ends in a 400 ``invalid_request_error`` line (code ``simulated_failure``) of the error
file.

Our choices where the vendor documents nothing:

- The input file is validated when the batch is created and its errors reported when
  ``validating`` ends (at most 100, each with its 1-based ``line``), with the codes
  ``invalid_json_line``, ``missing_custom_id``, ``duplicate_custom_id``,
  ``invalid_method``, ``mismatched_endpoint``, ``too_many_requests`` and
  ``empty_file`` (no request at all); blank lines are skipped. Only
  ``/v1/chat/completions`` and ``/v1/embeddings`` are simulated (another endpoint is
  refused with 400), only ``purpose=batch`` files are accepted, and an unknown
  ``input_file_id`` is a 400 (it is a body field, not the path).
- ``expires_at`` is ``created_at`` plus the 24 h window scaled by ``time_scale``; a
  batch drawn to expire (``batch_expire_rate``) does so earlier, partway through its
  requests, so tests need not wait a day. Expired requests count in ``failed`` and
  get a ``batch_expired`` line in the error file.
- Cancelling lasts ``batch_cancelling``; requests finishing meanwhile complete (none
  start if the batch was still validating). Never-run requests are omitted from both
  files, or written as ``batch_cancelled`` error lines (counted in ``failed``) with
  ``openai_batch_cancel_lines="batch_cancelled"``. Cancelling a batch already
  cancelling returns it unchanged; cancelling a terminal one is a 400.
- Random failures (``batch_request_failure_rate``) are 500 ``server_error`` lines.
  Output and error files have purpose ``batch_output``; lines are in input order,
  newline-separated with no trailing newline, served as ``application/octet-stream``.
- Batches are listed newest first; an unknown ``after`` id is a 400. A file's
  ``expires_at`` is 30 days on; ``GET /files`` (the list) and the file size limits
  (512 MB, 200 MB for a batch) are not simulated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from prefect_pollers.testing.simulator.batches import (
    DOOMED,
    SUCCEEDS,
    BatchProvider,
    Line,
    RequestPlan,
    digest,
    file_size,
    newest_first,
    position,
    wall,
)
from prefect_pollers.testing.simulator.callbacks import SendsCallbacks
from prefect_pollers.testing.simulator.errors import Refusal
from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Reply
from prefect_pollers.testing.simulator.validation import an_object, json_object, non_empty_str

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
"""The batch endpoints simulated."""
FILE_LIFETIME_S = 30 * 86_400
MAX_ERRORS = 100
EMBEDDING_SIZE = 8
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_TYPES = {429: "requests"}
_CODES = {"unauthorized": "invalid_api_key", "rate_limited": "rate_limit_exceeded"}
_EXPIRED = "This request could not be executed before the completion window expired."
_CANCELLED = "This request was not executed because the batch was cancelled."

FileKind = Literal["input", "output", "error"]


@dataclass(eq=False)
class _File:
    """A stored file: uploaded bytes, or a batch's output or error file."""

    id: str
    filename: str
    created_at: int
    """Epoch seconds of the upload (a batch's files date from the batch's end)."""
    kind: FileKind
    content: bytes = b""
    batch: _Batch | None = None
    size: int | None = None
    """A batch file's bytes, counted the first time it is described."""


@dataclass(eq=False)
class _Batch:
    """What a batch keeps beside its job: its input, plan and event times."""

    job: Job
    endpoint: str
    input_file_id: str
    input: bytes
    metadata: dict[str, str] | None
    model: str | None
    output_file_id: str
    error_file_id: str
    plan: RequestPlan | None
    errors: list[dict[str, Any]]
    marks: dict[str, float] = field(default_factory=dict)
    """Real monotonic instants of the ``*_at`` events, past or planned."""
    unrun: str | None = None
    """The error code written for requests that never ran (None: omitted)."""


def request_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a JSONL file with their 1-based numbers, one at a time."""
    start, number = 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        number += 1
        if data[start:end].strip():
            yield number, data[start:end]
        start = end + 1


class OpenAIBatch(SendsCallbacks, BatchProvider):
    """The OpenAI Files and Batch APIs, and the project's webhooks of batch ends."""

    name = "openai-batch"
    status_field = ("status",)
    max_requests = 50_000

    def reset(self) -> None:
        """Also forget every file and batch."""
        super().reset()
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}

    def routes(self) -> list[Route]:
        """Files (upload, retrieve, content, delete) and batches (create, get, cancel, list)."""
        return [
            self.route("POST", "/files", "upload", self.upload_file),
            self.route("GET", "/files/{file_id}", "result", self.get_file),
            self.route("GET", "/files/{file_id}/content", "result", self.get_content),
            self.route("DELETE", "/files/{file_id}", "delete", self.delete_file),
            self.route("POST", "/batches", "submit", self.create_batch),
            self.route("GET", "/batches", "list", self.list_batches),
            self.route("GET", "/batches/{batch_id}", "status", self.get_batch),
            self.route("POST", "/batches/{batch_id}/cancel", "cancel", self.cancel_batch),
        ]

    def authorized(self, request: Request) -> bool:
        """``Authorization: Bearer <key>``."""
        return request.headers.get("Authorization") == f"Bearer {self.config.api_key}"

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        kind = "server_error" if status >= 500 else _TYPES.get(status, "invalid_request_error")
        error = {"message": message, "type": kind, "param": None, "code": _CODES.get(code, code)}
        return {"error": error}

    def extra_stats(self) -> dict[str, Any]:
        """The batches', the webhooks' and the files' counters."""
        return (
            BatchProvider.extra_stats(self)
            | SendsCallbacks.extra_stats(self)
            | {
                "files_uploaded": self.batch_stats.files_uploaded,
                "files_deleted": self.batch_stats.files_deleted,
            }
        )

    # -- files ------------------------------------------------------------------

    async def upload_file(self, request: Request) -> Reply:
        """Store an uploaded ``purpose=batch`` file."""
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise Refusal(400, "invalid_request_error", "file: a file is required")
            if form.get("purpose") != "batch":
                raise Refusal(400, "invalid_request_error", "purpose: only 'batch' is simulated")
            content = await upload.read()
            filename = upload.filename or "upload.jsonl"
        created_at = round(self.state.clock.time())
        stored = _File(self.new_id("file-"), filename, created_at, "input", content)
        self.files[stored.id] = stored
        self.batch_stats.files_uploaded += 1
        return Reply(200, self.render_file(stored))

    async def get_file(self, request: Request) -> Reply:
        """A file's object."""
        return Reply(200, self.render_file(self.find_file(request.path_params["file_id"])))

    async def get_content(self, request: Request) -> Reply:
        """A file's raw bytes; a batch's files are generated as they are streamed."""
        stored = self.find_file(request.path_params["file_id"])
        if stored.batch is None:
            response = Response(stored.content, 200, media_type="application/octet-stream")
            return Reply(200, {}, response=response)
        return self.stream(self.file_lines(stored.batch, stored.kind), "application/octet-stream")

    async def delete_file(self, request: Request) -> Reply:
        """Delete a file (a batch keeps running on a deleted input file)."""
        stored = self.find_file(request.path_params["file_id"])
        del self.files[stored.id]
        self.batch_stats.files_deleted += 1
        return Reply(200, {"id": stored.id, "object": "file", "deleted": True})

    def find_file(self, file_id: str) -> _File:
        """The file ``file_id``, or 404 (a batch's files exist once it ended with lines)."""
        stored = self.files.get(file_id)
        if stored is None or not self.file_ready(stored):
            raise Refusal(404, "not_found", f"No such File object: {file_id}")
        return stored

    def file_ready(self, stored: _File) -> bool:
        """Whether a file exists yet: a batch's output or error file only once it has lines."""
        batch = stored.batch
        return batch is None or stored.id in self.result_files(batch, self.now())

    def render_file(self, stored: _File) -> dict[str, Any]:
        """The FileObject (a batch's file is sized by generating it once)."""
        batch = stored.batch
        if batch is None:
            created, size = stored.created_at, len(stored.content)
        else:
            created = round(wall(batch.job, batch.job.end))
            if stored.size is None:
                stored.size = file_size(self.file_lines(batch, stored.kind))
            size = stored.size
        return {
            "id": stored.id,
            "object": "file",
            "bytes": size,
            "created_at": created,
            "expires_at": created + FILE_LIFETIME_S,
            "filename": stored.filename,
            "purpose": "batch" if stored.kind == "input" else "batch_output",
            "status": "processed",
            "status_details": None,
        }

    # -- batches ----------------------------------------------------------------

    async def create_batch(self, request: Request) -> Reply:
        """Create a batch from an uploaded file; the file is checked while validating."""
        body = await json_object(request)
        input_file_id = non_empty_str(body, "input_file_id")
        endpoint = non_empty_str(body, "endpoint")
        if endpoint not in ENDPOINTS:
            raise Refusal(400, "invalid_request_error", f"endpoint: one of {', '.join(ENDPOINTS)}")
        if body.get("completion_window") != "24h":
            raise Refusal(400, "invalid_request_error", "completion_window: must be '24h'")
        metadata = self.metadata(body)
        stored = self.files.get(input_file_id)
        if stored is None or stored.kind != "input":
            raise Refusal(400, "invalid_request_error", f"input_file_id: no file {input_file_id}")

        errors, doomed, model = self.validate(stored.content, endpoint)
        validating = self.draw(self.config.openai_batch_validating)
        phases = [("validating", validating)]
        terminal = "failed"
        plan = None
        if not errors:
            plan = self.plan(doomed, running := self.draw(self.config.batch_duration))
            expires_after = self.draw_expiry(plan)
            if expires_after is None:
                terminal = "completed"
                finalizing = self.draw(self.config.openai_batch_finalizing)
                phases += [("in_progress", running), ("finalizing", finalizing)]
            else:
                terminal = "expired"
                phases.append(("in_progress", expires_after))
        job = self.new_batch(request, self.new_id("batch_"), phases, terminal)
        batch = _Batch(
            job,
            endpoint,
            input_file_id,
            stored.content,
            metadata,
            model,
            self.new_id("file-"),
            self.new_id("file-"),
            plan,
            errors,
        )
        self.plan_marks(batch)
        self.batches[job.id] = batch
        for kind in ("output", "error"):
            file_id = batch.output_file_id if kind == "output" else batch.error_file_id
            name = f"{job.id}_{kind}.jsonl"
            self.files[file_id] = _File(file_id, name, 0, kind, batch=batch)
        if metadata and "idempotency_key" in metadata:
            self.batch_stats.batches_by_key[metadata["idempotency_key"]] += 1
        if self.config.openai_webhook_url:
            self.callbacks.schedule(job, self.config.openai_webhook_url)
        return Reply(200, self.render_batch(batch, job.created))

    def callback_body(self, job: Job, at: float | None) -> dict[str, Any]:
        """A ``batch.<status>`` event of the project's webhooks: it names the batch only."""
        status = job.terminal if at is None else job.status(at)
        return {
            "id": f"evt_{job.id}_{status}",
            "object": "event",
            "created_at": round(self.state.clock.time()),
            "type": f"batch.{status}",
            "data": {"id": job.id},
        }

    async def get_batch(self, request: Request) -> Reply:
        """A batch's status."""
        job = self.find(request.path_params["batch_id"])
        return self.serve_status(job, lambda job, now: self.render_batch(self.batches[job.id], now))

    async def cancel_batch(self, request: Request) -> Reply:
        """Start cancelling a batch (400 once it is terminal)."""
        job = self.find(request.path_params["batch_id"])
        batch = self.batches[job.id]
        now = self.now()
        status = job.status(now)
        if status in TERMINAL:
            raise Refusal(400, "invalid_request_error", f"Cannot cancel a batch that is {status}.")
        if status != "cancelling":
            ends_at = self.begin_cancel(job, "cancelling", "cancelled")
            if batch.plan is not None:
                batch.plan.stop_at(ends_at if now >= batch.plan.start else now)
            batch.marks = {name: at for name, at in batch.marks.items() if at <= now}
            batch.marks |= {"cancelling_at": now, "cancelled_at": ends_at}
            lines = self.config.openai_batch_cancel_lines
            batch.unrun = "batch_cancelled" if lines == "batch_cancelled" else None
            if self.config.openai_webhook_url:  # its end moved: batch.cancelled, then
                self.callbacks.unschedule(job)
                self.callbacks.schedule(job, self.config.openai_webhook_url)
        return Reply(200, self.render_batch(batch, now))

    async def list_batches(self, request: Request) -> Reply:
        """Batches, newest first, after the ``after`` id, ``limit`` (1..100) of them."""
        limit = request.query_params.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise Refusal(400, "invalid_request_error", "limit: an integer from 1 to 100")
        newest = newest_first(self.batches)
        after = request.query_params.get("after")
        start = 0 if after is None else position(newest, after, "after") + 1
        now = self.now()
        data = [self.render_batch(batch, now) for batch in newest[start : start + int(limit)]]
        return Reply(
            200,
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(newest) > start + int(limit),
            },
        )

    def metadata(self, body: dict[str, Any]) -> dict[str, str] | None:
        """The optional ``metadata``: at most 16 string pairs (keys <= 64, values <= 512)."""
        metadata = body.get("metadata")
        if metadata is None:
            return None
        pairs = an_object(body, "metadata", required=True)
        if len(pairs) > 16 or not all(
            isinstance(value, str) and len(key) <= 64 and len(value) <= 512
            for key, value in pairs.items()
        ):
            raise Refusal(
                400, "invalid_request_error", "metadata: at most 16 string pairs (64/512 chars)"
            )
        return pairs

    def validate(
        self, content: bytes, endpoint: str
    ) -> tuple[list[dict[str, Any]], list[bool], str | None]:
        """Check an input file: its errors, which requests say "FAIL", the first model."""
        errors: list[dict[str, Any]] = []
        doomed: list[bool] = []
        seen: set[str] = set()
        model = None

        def error(code: str, message: str, line: int, param: str | None = None) -> None:
            """Report an error of the file (the first ``MAX_ERRORS`` are kept)."""
            if len(errors) < MAX_ERRORS:
                errors.append({"code": code, "message": message, "param": param, "line": line})

        for number, raw in request_lines(content):
            if len(doomed) == self.max_requests:
                error("too_many_requests", f"More than {self.max_requests} requests.", number)
                break
            doomed.append(b"FAIL" in raw)
            try:
                line = json.loads(raw)
            except ValueError:
                error("invalid_json_line", f"Line {number} is not valid JSON.", number)
                continue
            if not isinstance(line, dict):
                error("invalid_json_line", f"Line {number} is not a JSON object.", number)
                continue
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                error("missing_custom_id", "Missing custom_id.", number, "custom_id")
            elif custom_id in seen:
                error(
                    "duplicate_custom_id",
                    f"Duplicate custom_id {custom_id!r}.",
                    number,
                    "custom_id",
                )
            else:
                seen.add(custom_id)
            if line.get("method") != "POST":
                error("invalid_method", "Only POST requests are supported.", number, "method")
            if line.get("url") != endpoint:
                error("mismatched_endpoint", f"The url must be {endpoint}.", number, "url")
            request_body = line.get("body")
            if model is None and isinstance(request_body, dict):
                model = request_body.get("model")
        if not doomed and not errors:
            error("empty_file", "The input file has no requests.", 1)
        return errors, doomed, model if isinstance(model, str) else None

    def plan_marks(self, batch: _Batch) -> None:
        """Plan the instants of the batch's ``*_at`` events from its job's timeline."""
        job = batch.job
        validated = job.phases[0][1]
        if batch.plan is None:
            batch.marks["failed_at"] = validated
            return
        batch.plan.start = validated
        batch.marks["in_progress_at"] = validated
        if job.terminal == "expired":
            batch.marks["expired_at"] = job.end
            batch.unrun = "batch_expired"
        else:
            batch.marks |= {"finalizing_at": job.phases[1][1], "completed_at": job.end}

    def counts(self, batch: _Batch, now: float) -> dict[str, int]:
        """``request_counts`` at ``now``: growing while running; never-run lines fail."""
        plan = batch.plan
        started = batch.marks.get("in_progress_at")
        if plan is None or started is None or now < started:
            return {"total": 0, "completed": 0, "failed": 0}
        completed, failed = plan.done(now)
        if batch.unrun is not None and batch.job.is_terminal(now):
            failed = len(plan) - completed
        return {"total": len(plan), "completed": completed, "failed": failed}

    def result_files(self, batch: _Batch, now: float) -> dict[str, str]:
        """The ids of the batch's output and error files that exist at ``now``."""
        if not batch.job.is_terminal(now):
            return {}
        counts = self.counts(batch, now)
        files = {batch.output_file_id: "output_file_id", batch.error_file_id: "error_file_id"}
        return {
            file_id: name
            for file_id, name in files.items()
            if counts["completed" if name == "output_file_id" else "failed"]
        }

    def render_batch(self, batch: _Batch, now: float) -> dict[str, Any]:
        """The Batch object at ``now``."""
        job = batch.job
        status = job.status(now)
        files = {name: file_id for file_id, name in self.result_files(batch, now).items()}
        created = round(wall(job, job.created))
        body: dict[str, Any] = {
            "id": job.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": files.get("output_file_id"),
            "error_file_id": files.get("error_file_id"),
            "created_at": created,
            "expires_at": round(job.data["expires_at"]),
            "request_counts": self.counts(batch, now),
            "metadata": batch.metadata,
            "model": batch.model,
        }
        for name in (
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
        ):
            at = batch.marks.get(name)
            body[name] = round(wall(job, at)) if at is not None and at <= now else None
        if status == "failed":
            body["errors"] = {"object": "list", "data": batch.errors}
        return body

    # -- results ----------------------------------------------------------------

    def file_lines(self, batch: _Batch, kind: FileKind) -> Iterator[Line]:
        """The lines of a batch's output or error file, generated from its plan."""
        plan = batch.plan
        if plan is None:
            return
        for index, (_, raw) in enumerate(request_lines(batch.input)):
            finished, fate = plan.finished(index), plan.fate(index)
            if finished and fate == SUCCEEDS:
                if kind == "output":
                    yield self.output_line(batch, index, raw), plan.malformed(index)
            elif kind == "error" and (finished or batch.unrun):
                line = json.loads(raw)
                text = self.error_line(batch, index, line, fate if finished else None)
                yield text, plan.malformed(index)

    def output_line(self, batch: _Batch, index: int, raw: bytes) -> str:
        """A successful request's output line: its 200 response."""
        ids = digest([batch.job.id, str(index)])
        line = json.loads(raw)
        body = line.get("body")
        model = body.get("model") if isinstance(body, dict) else None
        model = str(model or batch.model or "unknown")
        prompt_tokens = max(1, len(raw) // 4)

        def respond(response: dict[str, Any]) -> dict[str, Any]:
            """The output line carrying ``response`` as a 200 body."""
            return {
                "id": f"batch_req_{ids}",
                "custom_id": line["custom_id"],
                "response": {"status_code": 200, "request_id": f"req_{ids}", "body": response},
                "error": None,
            }

        if batch.endpoint == "/v1/embeddings":
            vector = [
                round((int(ids[i : i + 2], 16) - 128) / 128, 4)
                for i in range(0, 2 * EMBEDDING_SIZE, 2)
            ]
            embedding = {"object": "embedding", "index": 0, "embedding": vector}
            usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
            return json.dumps(
                respond({"object": "list", "data": [embedding], "model": model, "usage": usage})
            )
        created = round(wall(batch.job, batch.marks["in_progress_at"]))

        def chat(text: str, completion_tokens: int) -> dict[str, Any]:
            """The output line of a chat completion answering ``text``."""
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            return respond(
                {
                    "id": f"chatcmpl-{ids}",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
            )

        return self.padded(chat, f"Simulated answer to {line['custom_id']}.")

    def error_line(self, batch: _Batch, index: int, line: dict[str, Any], fate: int | None) -> str:
        """A failed request's error-file line (``fate`` None: it never ran)."""
        ids = digest([batch.job.id, str(index)])
        out: dict[str, Any] = {"id": f"batch_req_{ids}", "custom_id": line["custom_id"]}
        if fate is None:
            code = batch.unrun or "batch_expired"
            message = _EXPIRED if code == "batch_expired" else _CANCELLED
            return json.dumps(out | {"response": None, "error": {"code": code, "message": message}})
        if fate == DOOMED:
            message = "Simulated failure: the request contains FAIL."
            status, error = 400, self.error_body(400, "simulated_failure", message)
        else:
            status, error = 500, self.error_body(500, "server_error", "The server had an error.")
        response = {"status_code": status, "request_id": f"req_{ids}", "body": error}
        return json.dumps(out | {"response": response, "error": None})
