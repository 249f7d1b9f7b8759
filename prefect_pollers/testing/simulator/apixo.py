"""APIXO: media generation tasks (seed 003), at ``/apixo/api/v1``.

``POST /generateTask/{model}`` is documented; its response shape and the status path
are our choice: ``{"code": 200, "msg": "success", "data": {"taskId", "model"}}`` and
``GET /checkStatus/{model}/{taskId}``. ``data.state`` walks ``waiting`` ->
``generating`` -> ``success`` (``resultJson``, a JSON string of ``resultUrls``) or
``failed`` (``failCode``, ``failMsg``). Errors use the same envelope. In callback
mode the ``data`` object is posted to ``callback_url`` (loopback only) when the task
ends, signed by the Standard Webhooks scheme when the simulator has a
``callback_secret``, with the ``callback_faults`` it is given. A prompt containing
"fail" fails with ``CONTENT_POLICY``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from prefect_pollers.testing.simulator.callbacks import SendsCallbacks
from prefect_pollers.testing.simulator.errors import Invalid, Refusal
from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Reply
from prefect_pollers.testing.simulator.validation import (
    an_object,
    json_object,
    loopback_url,
    non_empty_str,
)

FILE_TYPES = {
    "nano-banana": "png",
    "flux-2": "png",
    "sora-2": "mp4",
    "veo-3-1": "mp4",
    "suno": "mp3",
}


class Apixo(SendsCallbacks):
    """The APIXO task API."""

    name = "apixo"
    status_field = ("data", "state")

    def routes(self) -> list[Route]:
        """``POST /generateTask/{model}`` and ``GET /checkStatus/{model}/{task_id}``."""
        return [
            self.route("POST", "/generateTask/{model}", "submit", self.generate_task),
            self.route("GET", "/checkStatus/{model}/{task_id}", "status", self.check_status),
        ]

    def authorized(self, request: Request) -> bool:
        """``Authorization: Bearer <key>``."""
        return request.headers.get("Authorization") == f"Bearer {self.config.api_key}"

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        """APIXO's envelope: ``{"code": <HTTP status>, "msg": ...}``."""
        return {"code": status, "msg": message}

    async def generate_task(self, request: Request) -> Reply:
        """Start a generation task."""
        model = request.path_params["model"]
        body = await json_object(request)
        mode = body.get("request_type")
        if mode not in ("async", "callback"):
            raise Invalid("request_type", "must be 'async' or 'callback'")
        callback_url = loopback_url(body, "callback_url") if mode == "callback" else None
        prompt = non_empty_str(an_object(body, "input", required=True), "prompt", "input.")
        doomed = "fail" in prompt.lower()
        fate = self.draw_fate(doomed=doomed)
        bounds = self.config.apixo_durations.get(model, self.config.apixo_default_duration)
        duration = self.draw(bounds)
        data: dict[str, Any] = {"model": model}
        if doomed:
            data |= {"failCode": "CONTENT_POLICY", "failMsg": "prompt rejected by content policy"}
        elif fate == "failure":
            data |= {"failCode": "GENERATION_FAILED", "failMsg": "the model produced no output"}
        job = self.new_job(
            request,
            self.new_id("task_"),
            [("waiting", 0.2 * duration), ("generating", 0.8 * duration)],
            "failed" if fate == "failure" else "success",
            finishes=fate != "never",
            data=data,
        )
        if callback_url is not None:
            await self.call_back(job, callback_url)
        return Reply(200, _envelope({"taskId": job.id, "model": model}))

    async def check_status(self, request: Request) -> Reply:
        """Report a task's state."""
        model, task_id = request.path_params["model"], request.path_params["task_id"]
        job = self.find(task_id)
        if job.data["model"] != model:
            raise Refusal(404, "not_found", f"no {model} task with id {task_id!r}")
        return self.serve_status(job, lambda job, now: _envelope(self.task_data(job, now)))

    def task_data(self, job: Job, now: float | None = None) -> dict[str, Any]:
        """The task's ``data`` object at ``now`` (at its end if not given)."""
        state = job.status(job.end if now is None else now)
        data: dict[str, Any] = {"taskId": job.id, "model": job.data["model"], "state": state}
        if state == "success":
            kind = FILE_TYPES.get(job.data["model"], "png")
            urls = [f"https://cdn.apixo.example/{job.id}/output-0.{kind}"]
            data["resultJson"] = json.dumps({"resultUrls": urls})
        elif state == "failed":
            data |= {"failCode": job.data["failCode"], "failMsg": job.data["failMsg"]}
        return data

    def callback_body(self, job: Job, at: float | None) -> dict[str, Any]:
        """The task's ``data`` object (the status without its envelope)."""
        return self.task_data(job, at)


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    """Wrap ``data`` in APIXO's success envelope."""
    return {"code": 200, "msg": "success", "data": data}
