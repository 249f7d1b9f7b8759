"""APIXO generation tasks (``POST /generateTask/{model}``).

Documented: Bearer auth; the create body ``{request_type: "async" | "callback",
callback_url?, input: {prompt, ...}}``; the status's ``data.state`` (``success``
with ``data.resultJson``, a JSON string holding ``resultUrls``; ``failed`` with
``failCode`` and ``failMsg``; anything else in progress); per-model schedules
(initial wait / interval / max: nano-banana 5/3/120 s, flux-2 10/5/180, sora-2
60/15/600, veo-3-1 45/10/480, suno 30/10/300, others 10/5/300); network errors
retried up to 3 times.

Not documented, our choices (overridable on the block): the API root (no default:
set ``base_url``), the status path ``checkStatus/{model}/{task_id}`` (named after
the guide's ``checkStatus(model, taskId)``), the create response carrying the id
in ``data.taskId`` (or ``taskId``/``id``), and the non-terminal state names.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from prefect_pollers.engine import (
    JobRef,
    JobStatus,
    JsonReply,
    MalformedResponseError,
    PollPolicy,
    StatusMap,
)
from prefect_pollers.providers.base import JobApiCredentials, dig

# model -> (initial wait, interval, max) in seconds, from the guide's getPollingConfig.
APIXO_SCHEDULES: dict[str, tuple[float, float, float]] = {
    "nano-banana": (5, 3, 120),
    "flux-2": (10, 5, 180),
    "sora-2": (60, 15, 600),
    "veo-3-1": (45, 10, 480),
    "suno": (30, 10, 300),
}
APIXO_DEFAULT_SCHEDULE = (10.0, 5.0, 300.0)


class ApixoTaskRequest(BaseModel):
    """A generation task for one model.

    Attributes:
        model: The model, e.g. ``nano-banana``, ``sora-2`` (it goes in the path).
        input: The model input; ``prompt`` is required.
        request_type: ``async`` (poll) or ``callback`` (APIXO also posts the result
            to ``callback_url``; we still poll, as a fallback).
        callback_url: Where APIXO posts the result in callback mode.
    """

    model: str = Field(min_length=1)
    input: dict[str, Any]
    request_type: Literal["async", "callback"] = "async"
    callback_url: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ApixoTaskRequest:
        prompt = self.input.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("input.prompt must be a non-empty string")
        if self.request_type == "callback" and not self.callback_url:
            raise ValueError("callback_url is required when request_type is 'callback'")
        return self


class ApixoTaskResult(BaseModel):
    """A successful generation.

    Attributes:
        task_id: The task id.
        model: The model that generated it.
        result_urls: ``resultUrls`` from ``resultJson``.
        result: The whole parsed ``resultJson``.
        payload: The whole final ``data`` object.
    """

    task_id: str
    model: str
    result_urls: list[str] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)
    payload: dict[str, Any] = Field(default_factory=dict)

    @property
    def job_id(self) -> str:
        """The task id, under the name every result model shares."""
        return self.task_id


def apixo_policy(model: str) -> PollPolicy:
    """The guide's adaptive schedule for ``model``: initial wait, fixed interval, max."""
    initial, interval, maximum = APIXO_SCHEDULES.get(model, APIXO_DEFAULT_SCHEDULE)
    return PollPolicy(
        initial_delay=initial, interval=interval, max_interval=max(interval, 30.0),
        deadline=maximum, error_budget=3, error_backoff=1.0, error_backoff_multiplier=2.0,
    )


class ApixoCredentials(JobApiCredentials):
    """Credentials and client for APIXO generation tasks.

    Attributes:
        api_key: The APIXO API key (Bearer).
        base_url: The API root (APIXO's docs call it ``API_URL``; no default).
        status_path_template: Status path, with ``{model}`` and ``{task_id}``.

    Example:
        ```python
        from prefect_pollers import ApixoCredentials, run_job

        creds = ApixoCredentials(api_key="...", base_url="https://<API_URL>")
        result = await run_job(creds, {"model": "flux-2", "input": {"prompt": "a fox"}})
        print(result.result_urls)
        ```
    """

    _block_type_name = "APIXO Credentials"
    _block_type_slug = "apixo-credentials"
    _description = "Credentials for APIXO image, video and audio generation tasks."
    _code_example = """```python
from prefect_pollers import ApixoCredentials

creds = ApixoCredentials.load("BLOCK_NAME")
```"""

    provider: ClassVar[str] = "apixo"
    request_model: ClassVar[type[BaseModel]] = ApixoTaskRequest
    status_map: ClassVar[StatusMap] = StatusMap(
        succeeded={"success"},
        failed={"failed"},
        pending={"waiting", "queuing", "pending"},
        running={"generating", "processing", "running"},
    )

    base_url: str = Field(description="The APIXO API root (API_URL in its docs).")
    status_path_template: str = Field(
        default="checkStatus/{model}/{task_id}",
        description="Status path (undocumented by APIXO: our choice).",
    )

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"}

    def submit_request(self, request: BaseModel) -> tuple[str, str, dict[str, Any]]:
        assert isinstance(request, ApixoTaskRequest)
        return "POST", f"generateTask/{request.model}", request.model_dump(
            exclude={"model"}, exclude_none=True
        )

    def read_submitted(self, request: BaseModel, reply: JsonReply) -> JobRef:
        assert isinstance(request, ApixoTaskRequest)
        body = reply.body
        task_id = dig(body, "data", "taskId") or body.get("taskId") or body.get("id")
        return self.job_ref(reply, task_id, "data.taskId", context={"model": request.model})

    def status_path(self, ref: JobRef) -> str:
        return self.status_path_template.format(
            model=ref.context.get("model", ""), task_id=ref.job_id
        )

    def read_status(self, job_id: str, reply: JsonReply) -> JobStatus:
        data = reply.body.get("data")
        return self.make_status(
            job_id,
            reply,
            dig(data, "state"),
            error_code=dig(data, "failCode"),
            error_message=dig(data, "failMsg"),
        )

    async def fetch_result(self, ref: JobRef, status: JobStatus) -> ApixoTaskResult:
        data = status.payload.get("data") or {}
        raw = data.get("resultJson")
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise MalformedResponseError(
                "apixo success without a readable resultJson",
                provider=self.provider, job_id=ref.job_id,
            )
        urls = parsed.get("resultUrls") or []
        return ApixoTaskResult(
            task_id=ref.job_id,
            model=ref.context.get("model", ""),
            result_urls=[str(u) for u in urls] if isinstance(urls, list) else [],
            result=parsed,
            payload=data,
        )

    def default_policy(self, ref: JobRef) -> PollPolicy:
        return apixo_policy(ref.context.get("model", ""))
