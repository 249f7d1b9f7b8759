"""A made-up generic job API at ``/generic/v2``, shaped unlike the real providers.

It exists so a declaratively configured client can be tested against something no
provider class knows. ``X-Auth-Token`` auth, or HTTP Basic auth with any user name
and the key as password; everything is wrapped in ``task``; the state is an object
(``{"name", "reason"?}``); results live at ``/output``; tasks can be aborted. A task
is submitted to ``/tasks``, or to a named queue at ``/queues/{queue}/tasks`` (the
name, any text percent-encoded into one segment, is echoed as ``task.queue``).
A kind containing "fail" ends in ``ERROR``. A task with a
``callback_url`` (loopback only) gets its final task object posted there when it
ends, Standard Webhooks-signed when the simulator has a ``callback_secret``.
"""

from __future__ import annotations

import base64
import binascii
import random
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from prefect_pollers.testing.simulator.callbacks import SendsCallbacks
from prefect_pollers.testing.simulator.errors import Refusal
from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Reply
from prefect_pollers.testing.simulator.validation import (
    an_object,
    json_object,
    loopback_url,
    non_empty_str,
)
from prefect_pollers.testing.simulator.wire import iso_timestamp

REASONS = {
    "ERROR": {"code": "task_error", "text": "the task raised an error"},
    "ABORTED": {"code": "aborted", "text": "aborted by the client"},
    "TIMED_OUT": {"code": "timed_out", "text": "the task exceeded its time budget"},
}


class Generic(SendsCallbacks):
    """The generic task API."""

    name = "generic"
    status_field = ("task", "state", "name")
    sends_retry_after = True

    def routes(self) -> list[Route]:
        """Submit, status, output and abort routes."""
        return [
            self.route("POST", "/tasks", "submit", self.create_task),
            self.route("POST", "/queues/{queue}/tasks", "submit", self.create_task),
            self.route("GET", "/tasks/{uid}", "status", self.get_task),
            self.route("GET", "/tasks/{uid}/output", "result", self.get_output),
            self.route("POST", "/tasks/{uid}/abort", "cancel", self.abort_task),
        ]

    def authorized(self, request: Request) -> bool:
        """``X-Auth-Token: <key>``, or ``Authorization: Basic`` of ``<any user>:<key>``."""
        if request.headers.get("X-Auth-Token") == self.config.api_key:
            return True
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            pair = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = pair.partition(":")
        return bool(user) and password == self.config.api_key

    def poll_interval(self) -> float:
        """The Retry-After sent with every status response."""
        return self.config.generic_retry_after

    async def create_task(self, request: Request) -> Reply:
        """Queue a task (in the queue the path names, if any)."""
        task = an_object(await json_object(request), "task", required=True)
        kind = non_empty_str(task, "kind", "task.")
        params = an_object(task, "params", "task.", required=True)
        fate = self.draw_fate(doomed="fail" in kind.lower())
        terminal = "ERROR" if fate == "failure" else "DONE"
        if fate == "success" and self.rng.random() < self.config.generic_timeout_rate:
            terminal = "TIMED_OUT"
        duration = self.draw(self.config.generic_duration)
        job = self.new_job(
            request,
            self.new_id("t-"),
            [("QUEUED", 0.2 * duration), ("WORKING", 0.8 * duration)],
            terminal,
            finishes=fate != "never",
            data={"kind": kind, "params": params, "queue": request.path_params.get("queue")},
        )
        if "callback_url" in task:
            await self.call_back(job, loopback_url(task, "callback_url", "task."))
        return Reply(201, {"task": {"uid": job.id, "state": {"name": job.status(job.created)}}})

    async def get_task(self, request: Request) -> Reply:
        """Report a task's state, with a Retry-After."""
        return self.serve_status(self.find(request.path_params["uid"]), self.render)

    async def get_output(self, request: Request) -> Reply:
        """Return a finished task's output (409 unless DONE)."""
        job = self.find(request.path_params["uid"])
        state = job.status(self.now())
        if state != "DONE":
            raise Refusal(409, "not_done", f"task {job.id} is {state}, not DONE")
        rng = random.Random(f"{self.config.seed}:{job.id}")
        output = {
            "kind": job.data["kind"],
            "params": job.data["params"],
            "value": round(rng.uniform(0.0, 1000.0), 3),
            "finished_at": iso_timestamp(job.end_wall()),
        }
        return Reply(200, {"output": output}, delivers=job)

    async def abort_task(self, request: Request) -> Reply:
        """Abort a task; aborting a finished task changes nothing."""
        job = self.find(request.path_params["uid"])
        self.cancel(job, "ABORTED")
        return Reply(200, self.render(job, self.now()), delivers=job)

    def callback_body(self, job: Job, at: float | None) -> dict[str, Any]:
        """A ``task.updated`` event with the task object as of ``at`` (its end if None)."""
        return {"type": "task.updated", **self.render(job, job.end if at is None else at)}

    def render(self, job: Job, now: float) -> dict[str, Any]:
        """The task object at ``now``."""
        name = job.status(now)
        state: dict[str, Any] = {"name": name}
        if name in REASONS:
            state["reason"] = REASONS[name]
        task = {"uid": job.id, "kind": job.data["kind"], "state": state}
        if job.data.get("queue") is not None:
            task["queue"] = job.data["queue"]
        return {"task": task}
