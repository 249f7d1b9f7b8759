"""fal's queue (https://docs.fal.ai/model-endpoints/queue), at ``/fal``.

``POST /{app}`` (the model id with its subpath, e.g. ``fal-ai/flux/dev``; any JSON
object as input) queues a request and answers ``request_id``, ``gateway_request_id``,
``response_url``, ``status_url``, ``cancel_url`` (absolute, on the simulator's origin)
and ``queue_position``; those three live under the app's owner/alias *without* its
subpath: ``GET .../requests/{id}/status`` answers ``IN_QUEUE`` (``queue_position``),
``IN_PROGRESS`` or ``COMPLETED`` (with ``error`` and ``error_type`` for a failure),
``GET .../requests/{id}`` the result (400 before the end, 422 for a failure, 499 for a
cancelled request), ``PUT .../requests/{id}/cancel`` cancels (202
``CANCELLATION_REQUESTED``, or 400 ``ALREADY_COMPLETED``). ``Authorization: Key <key>``;
errors are ``{"detail": ...}``; no poll interval is documented, so none is enforced.
A request submitted with ``?fal_webhook=URL`` (loopback only) gets fal's webhook body
posted there when it ends, ``{request_id, gateway_request_id, status: "OK"|"ERROR",
payload, error?}``, signed as ``callback_signing`` says (``ed25519``: fal's scheme). The
queue position is always 0: jobs here run side by side. A prompt containing "fail"
fails with ``content_policy``.
"""

from __future__ import annotations

import random
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from prefect_pollers.testing.simulator.callbacks import SendsCallbacks
from prefect_pollers.testing.simulator.errors import Refusal
from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Reply
from prefect_pollers.testing.simulator.validation import json_object, loopback_url

COMPLETED = "COMPLETED"
FAILED = "FAILED"
"""Internal: a request that ended with an error (fal reports it ``COMPLETED``)."""
CANCELLED = "CANCELLED"
"""Internal: a cancelled request (fal reports it ``COMPLETED``; its result answers 499)."""
REQUESTS = "/{owner}/{alias}/requests/{request_id}"
FAILURE = "Unprocessable: NSFW content detected"


class Fal(SendsCallbacks):
    """fal's queue API."""

    name = "fal"
    status_field = ("status",)

    def routes(self) -> list[Route]:
        """Status, result, cancel, then submit (which takes any other POST path)."""
        return [
            self.route("GET", REQUESTS + "/status", "status", self.get_status),
            self.route("GET", REQUESTS, "result", self.get_result),
            self.route("PUT", REQUESTS + "/cancel", "cancel", self.cancel_request),
            self.route("POST", "/{app:path}", "submit", self.submit),
        ]

    def authorized(self, request: Request) -> bool:
        """``Authorization: Key <key>``."""
        return request.headers.get("Authorization") == f"Key {self.config.api_key}"

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        """The error body fal answers: ``{"detail": ...}``."""
        return {"detail": message}

    async def submit(self, request: Request) -> Reply:
        """Queue a request for the app the path names."""
        segments = request.path_params["app"].strip("/").split("/")
        if len(segments) < 2 or not all(segments):
            raise Refusal(404, "not_found", "an app is owner/alias[/subpath]")
        body = await json_object(request)
        webhook = None
        if "fal_webhook" in request.query_params:
            webhook = loopback_url(dict(request.query_params), "fal_webhook")
        prompt = body.get("prompt")
        doomed = isinstance(prompt, str) and "fail" in prompt.lower()
        fate = self.draw_fate(doomed=doomed)
        duration = self.draw(self.config.fal_duration)
        origin = f"{request.url.scheme}://{request.url.netloc}"
        job = self.new_job(
            request,
            self.new_request_id(),
            [("IN_QUEUE", 0.2 * duration), ("IN_PROGRESS", 0.8 * duration)],
            FAILED if fate == "failure" else COMPLETED,
            finishes=fate != "never",
            data={
                "owner_alias": "/".join(segments[:2]),
                "origin": origin,
                "input": body,
                "webhook": webhook,
            },
        )
        if webhook is not None:
            await self.call_back(job, webhook)
        urls = self.urls(job)
        return Reply(
            200,
            {"request_id": job.id, "gateway_request_id": job.id, **urls, "queue_position": 0},
        )

    def new_request_id(self) -> str:
        """A UUID-shaped request id, drawn from the seeded generator."""
        digits = f"{self.rng.getrandbits(128):032x}"
        return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))

    def urls(self, job: Job) -> dict[str, str]:
        """The request's ``response_url``, ``status_url`` and ``cancel_url``."""
        root = f"{job.data['origin']}{self.prefix}/{job.data['owner_alias']}/requests/{job.id}"
        return {
            "response_url": root,
            "status_url": f"{root}/status",
            "cancel_url": f"{root}/cancel",
        }

    def find_request(self, request: Request) -> Job:
        """The job the path names, under the owner/alias it was submitted to."""
        params = request.path_params
        job = self.find(params["request_id"])
        if job.data["owner_alias"] != f"{params['owner']}/{params['alias']}":
            raise Refusal(404, "not_found", f"no request {job.id!r} under this app")
        return job

    async def get_status(self, request: Request) -> Reply:
        """Report a request's status."""
        return self.serve_status(self.find_request(request), self.render)

    async def get_result(self, request: Request) -> Reply:
        """A finished request's output (400 before, 422 failed, 499 cancelled)."""
        job = self.find_request(request)
        if not job.is_terminal(self.now()):
            raise Refusal(400, "in_progress", "Request is still in progress")
        if job.terminal == CANCELLED:
            raise Refusal(499, "cancelled", "Request cancelled")
        if job.terminal == FAILED:
            raise Refusal(422, "failed", FAILURE)
        return Reply(200, self.output(job), delivers=job)

    async def cancel_request(self, request: Request) -> Reply:
        """Cancel a request that has not ended."""
        job = self.find_request(request)
        if job.is_terminal(self.now()):
            return Reply(400, {"status": "ALREADY_COMPLETED"})
        self.cancel(job, CANCELLED)
        webhook = job.data.get("webhook")
        if webhook is not None:  # its end moved: the webhook goes now, saying so
            self.callbacks.unschedule(job)
            self.callbacks.schedule(job, webhook)
        return Reply(202, {"status": "CANCELLATION_REQUESTED"})

    def render(self, job: Job, now: float) -> dict[str, Any]:
        """The status object at ``now``."""
        status = job.status(now)
        body: dict[str, Any] = {
            "status": COMPLETED if job.is_terminal(now) else status,
            "request_id": job.id,
            "response_url": self.urls(job)["response_url"],
            "logs": None,
        }
        if status == "IN_QUEUE":
            body["queue_position"] = 0
        if status == FAILED:
            body |= {"error": FAILURE, "error_type": "content_policy"}
        if job.is_terminal(now):
            body["metrics"] = {"inference_time": round(job.end - job.created, 3)}
        return body

    def output(self, job: Job) -> dict[str, Any]:
        """The result payload, deterministic from the seed and the request id."""
        rng = random.Random(f"{self.config.seed}:{job.id}")
        image = {"url": f"https://v3.fal.media/files/{job.id}.png", "width": 1024, "height": 768}
        prompt = job.data["input"].get("prompt")
        return {"images": [image], "seed": rng.getrandbits(32), "prompt": prompt}

    def callback_body(self, job: Job, at: float | None) -> dict[str, Any]:
        """The webhook body fal posts: the request's outcome and payload.

        fal posts only when a request ends, so a stale copy (``at`` before the end,
        the ``out_of_order`` fault) repeats the same body.
        """
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        if job.terminal == COMPLETED:
            return body | {"status": "OK", "payload": self.output(job)}
        if job.terminal == CANCELLED:
            return body | {"status": "ERROR", "error": "Request cancelled", "payload": None}
        detail = [
            {"loc": ["body", "prompt"], "msg": "NSFW content detected", "type": "content_policy"}
        ]
        return body | {
            "status": "ERROR",
            "error": "Invalid status code: 422",
            "payload": {"detail": detail},
        }
