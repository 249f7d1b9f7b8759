"""ModelRoute: model executions (seed 004), at ``/modelroute/v1``.

Documented: ``GET /executions/{id}`` with terminal statuses ``COMPLETED``, ``FAILED``
(``error.code``/``error.message``), ``CANCELLED``, ``EXPIRED``; ``GET
/executions/{id}/result``; rate-limit headers on every response and 429 with
Retry-After over the limit. Our choices: creation is ``POST /executions`` with
``{"model": str, "input": object}`` (202), and the non-terminal statuses are
``QUEUED`` then ``RUNNING``. A model name containing "fail" always fails.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from prefect_pollers.testing.simulator.config import RouteKind
from prefect_pollers.testing.simulator.errors import Refusal
from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Handler, Provider, Reply
from prefect_pollers.testing.simulator.ratelimit import FixedWindowLimiter
from prefect_pollers.testing.simulator.validation import an_object, json_object, non_empty_str
from prefect_pollers.testing.simulator.wire import format_seconds, iso_timestamp

COMPLETED = "COMPLETED"


class ModelRoute(Provider):
    """The ModelRoute execution API."""

    name = "modelroute"
    status_field = ("status",)

    def reset(self) -> None:
        """Also forget the rate-limit windows."""
        super().reset()
        self.limiter = FixedWindowLimiter()

    def routes(self) -> list[Route]:
        """Create, status and result routes."""
        return [
            self.route("POST", "/executions", "submit", self.create_execution),
            self.route("GET", "/executions/{execution_id}", "status", self.get_execution),
            self.route("GET", "/executions/{execution_id}/result", "result", self.get_result),
        ]

    def authorized(self, request: Request) -> bool:
        """``Authorization: Bearer <key>``."""
        return request.headers.get("Authorization") == f"Bearer {self.config.api_key}"

    def extra_stats(self) -> dict[str, Any]:
        """The most requests admitted in one rate-limit window."""
        return {"window_max_requests": self.limiter.max_requests}

    async def serve(self, request: Request, kind: RouteKind, handler: Handler) -> Response:
        """Apply the per-key rate limit first, and put its headers on every response."""
        now = self.state.clock.time()
        window = self.config.real(self.config.rate_window_s)
        key = request.headers.get("Authorization", "")
        decision = self.limiter.admit(key, now, self.config.rate_limit, window)
        if decision.admitted:
            response = await super().serve(request, kind, handler)
        else:
            refusal = Refusal(
                429, "rate_limited", "rate limit exceeded", retry_after=decision.reset_at - now
            )
            reply = self.refusal_reply(refusal)
            response = JSONResponse(reply.body, reply.status, reply.headers)
        response.headers["X-RateLimit-Limit"] = str(decision.limit)
        response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
        response.headers["X-RateLimit-Reset"] = format_seconds(decision.reset_at)
        return response

    async def create_execution(self, request: Request) -> Reply:
        """Queue an execution."""
        body = await json_object(request)
        model = non_empty_str(body, "model")
        model_input = an_object(body, "input", required=True)
        fate = self.draw_fate(doomed="fail" in model.lower())
        terminal = "FAILED" if fate == "failure" else COMPLETED
        if fate == "success":
            draw = self.rng.random()
            if draw < self.config.modelroute_cancel_rate:
                terminal = "CANCELLED"
            elif draw < self.config.modelroute_cancel_rate + self.config.modelroute_expire_rate:
                terminal = "EXPIRED"
        duration = self.draw(self.config.modelroute_duration)
        phases = [("QUEUED", duration)]
        if terminal != "EXPIRED":
            phases = [("QUEUED", 0.25 * duration), ("RUNNING", 0.75 * duration)]
        job_id = f"exec_{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"
        data = {"model": model, "input": model_input, "duration": duration}
        job = self.new_job(request, job_id, phases, terminal, finishes=fate != "never", data=data)
        return Reply(202, {"id": job.id, "status": job.status(job.created)})

    async def get_execution(self, request: Request) -> Reply:
        """Report an execution's status."""
        job = self.find(request.path_params["execution_id"])
        return self.serve_status(job, self.render)

    async def get_result(self, request: Request) -> Reply:
        """Return a completed execution's result (409 before that)."""
        job = self.find(request.path_params["execution_id"])
        status = job.status(self.now())
        if status != COMPLETED:
            raise Refusal(409, "execution_not_completed", f"execution {job.id} is {status}")
        return Reply(200, self.result(job), delivers=job)

    def render(self, job: Job, now: float) -> dict[str, Any]:
        """The execution object at ``now``."""
        status = job.status(now)
        body: dict[str, Any] = {
            "id": job.id,
            "status": status,
            "model": job.data["model"],
            "created_at": iso_timestamp(job.created_wall),
        }
        if status == "FAILED":
            body["error"] = {"code": "model_error", "message": f"{job.data['model']} crashed"}
        return body

    def result(self, job: Job) -> dict[str, Any]:
        """The documented result object, deterministic from the seed and the job."""
        rng = random.Random(f"{self.config.seed}:{job.id}")
        input_tokens = max(1, len(json.dumps(job.data["input"])) // 4)
        image = {
            "file_id": f"file_{uuid.UUID(int=rng.getrandbits(128), version=4)}",
            "format": "png",
            "width": 1024,
            "height": 1024,
        }
        return {
            "execution_id": job.id,
            "status": COMPLETED,
            "output": {"images": [image]},
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
            "cost": f"{0.04 + 0.0001 * input_tokens:.4f}",
            "latency_ms": round(job.data["duration"] * 1000),
        }
