"""APIXO: media generation tasks (seed 003), at ``/apixo/api/v1``.

``POST /generateTask/{model}`` is documented; its response shape and the status path
are our choice: ``{"code": 200, "msg": "success", "data": {"taskId", "model"}}`` and
``GET /checkStatus/{model}/{taskId}``. ``data.state`` walks ``waiting`` ->
``generating`` -> ``success`` (``resultJson``, a JSON string of ``resultUrls``) or
``failed`` (``failCode``, ``failMsg``). Errors use the same envelope. In callback
mode the ``data`` object is posted to ``callback_url`` (loopback only) when the task
ends. A prompt containing "fail" fails with ``CONTENT_POLICY``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.routing import Route

from prefect_pollers.simulator.callbacks import CallbackSender
from prefect_pollers.simulator.errors import Invalid, Refusal
from prefect_pollers.simulator.jobs import Job
from prefect_pollers.simulator.provider import Provider, Reply
from prefect_pollers.simulator.validation import an_object, json_object, non_empty_str

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
FILE_TYPES = {
    "nano-banana": "png",
    "flux-2": "png",
    "sora-2": "mp4",
    "veo-3-1": "mp4",
    "suno": "mp3",
}


class Apixo(Provider):
    """The APIXO task API."""

    name = "apixo"
    status_field = ("data", "state")

    def reset(self) -> None:
        """Also drop pending callbacks and their counters."""
        previous = getattr(self, "callbacks", None)
        if previous is not None:
            previous.cancel()
        super().reset()
        self.callbacks = CallbackSender(self.now, self.task_data, self._callback_done)
        self.callbacks_sent = 0
        self.callbacks_failed = 0

    async def aclose(self) -> None:
        """Stop the callback loop."""
        await self.callbacks.aclose()

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

    def extra_stats(self) -> dict[str, Any]:
        """Callback delivery counters."""
        return {"callbacks_sent": self.callbacks_sent, "callbacks_failed": self.callbacks_failed}

    async def generate_task(self, request: Request) -> Reply:
        """Start a generation task."""
        model = request.path_params["model"]
        body = await json_object(request)
        mode = body.get("request_type")
        if mode not in ("async", "callback"):
            raise Invalid("request_type", "must be 'async' or 'callback'")
        callback_url = _loopback_url(body) if mode == "callback" else None
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
            self.callbacks.schedule(job, callback_url)
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

    def _callback_done(self, job: Job, accepted: bool) -> None:
        """Count a callback delivery; an accepted one hands over the terminal state."""
        if accepted:
            self.callbacks_sent += 1
            self.stats.record_observed(job)
        else:
            self.callbacks_failed += 1


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    """Wrap ``data`` in APIXO's success envelope."""
    return {"code": 200, "msg": "success", "data": data}


def _loopback_url(body: dict[str, Any]) -> str:
    """The request's ``callback_url``, which must be an http(s) URL on loopback."""
    url = non_empty_str(body, "callback_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK_HOSTS:
        raise Invalid(
            "callback_url", "must be an http(s) URL on 127.0.0.1 or localhost (loopback only)"
        )
    return url
