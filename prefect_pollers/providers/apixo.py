"""APIXO generation tasks (``POST /generateTask/{model}``).

Documented: Bearer auth; the create body ``{request_type: "async" | "callback",
callback_url?, input: {prompt, ...}}``; the status's ``data.state`` (``success``
with ``data.resultJson``, a JSON string holding ``resultUrls``; ``failed`` with
``failCode`` and ``failMsg``; anything else in progress); per-model schedules
(initial wait / interval / max: nano-banana 5/3/120 s, flux-2 10/5/180, sora-2
60/15/600, veo-3-1 45/10/480, suno 30/10/300, others 10/5/300); network errors
retried up to 3 times.

Not documented, our choices (overridable on the block): the API root (no default:
set ``base_url``), the status path ``checkStatus/{model}/{job_id}`` (named after
the guide's ``checkStatus(model, taskId)``), the create response carrying the id
in ``data.taskId`` (or ``taskId``/``id``), the non-terminal state names, and the
callback: the guide documents callback mode but no signature and no body (its
"Webhooks" page is not in our docs), so a callback is authenticated by a per-job
capability token in its URL, and its body is read as the status's ``data`` object
(bare or in the status envelope).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from prefect_pollers.engine import InvalidRequestError, JobRef, PollPolicy, StatusMap
from prefect_pollers.providers.callbacks import CallbackCredentials
from prefect_pollers.providers.contract import CallbackSpec, Endpoint, JobApiContract
from prefect_pollers.providers.protocol import JobResult
from prefect_pollers.providers.signatures import CapabilityUrl

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
        request_type: ``async`` (poll) or ``callback`` (APIXO posts the result to
            a callback URL when the task ends).
        callback_url: Where APIXO posts the result in callback mode. Leave it out to
            use the block's webhook receiver (``callback_base_url``): its callback
            then ends the wait, with polling only as a slow safety net.
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
        return self


class ApixoTaskResult(JobResult):
    """A successful generation.

    Attributes:
        job_id: The task id.
        model: The model that generated it.
        result_urls: ``resultUrls`` from ``resultJson``.
        result: The whole parsed ``resultJson``.
        payload: The whole final ``data`` object.
    """

    model: str
    result_urls: list[str] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)
    payload: dict[str, Any] = Field(default_factory=dict)

    @property
    def task_id(self) -> str:
        """The task id (APIXO's name for the job id)."""
        return self.job_id


def apixo_policy(model: str) -> PollPolicy:
    """The guide's adaptive schedule for ``model``: initial wait, fixed interval, max."""
    initial, interval, maximum = APIXO_SCHEDULES.get(model, APIXO_DEFAULT_SCHEDULE)
    return PollPolicy(
        initial_delay=initial,
        interval=interval,
        max_interval=max(interval, 30.0),
        deadline=maximum,
        error_budget=3,
        error_backoff=1.0,
        error_backoff_multiplier=2.0,
    )


APIXO_CONTRACT = JobApiContract(
    submit=Endpoint(method="POST", path="generateTask/{model}"),
    submit_exclude=frozenset({"model"}),
    job_id_field="data.taskId || taskId || id",
    context_fields={"model": "model"},
    status=Endpoint(path="checkStatus/{model}/{job_id}"),
    status_field="data.state",
    error_code_field="data.failCode",
    error_message_field="data.failMsg",
    status_map=StatusMap(
        succeeded=frozenset({"success"}),
        failed=frozenset({"failed"}),
        pending=frozenset({"waiting", "queuing", "pending"}),
        running=frozenset({"generating", "processing", "running"}),
    ),
    callback=CallbackSpec(
        url_field="callback_url",
        scheme=CapabilityUrl(),
        job_id_field="taskId || data.taskId",
        status_body="data && @ || {data: @}",
    ),
    # The guide's generateTask call sends no idempotency header and says nothing of
    # duplicates (its network retries are for status checks): a lost submit answer
    # stays "may have created".
    dedup_header=None,
    submit_not_created_statuses=frozenset(),
)
"""APIXO's documented contract, with our choices for the status path, where the
create response puts the id, the non-terminal state names and the callback."""


class ApixoCredentials(CallbackCredentials[ApixoTaskResult]):
    """Credentials for APIXO generation tasks.

    Attributes:
        api_key: The APIXO API key (Bearer).
        base_url: The API root (APIXO's docs call it ``API_URL``; no default).
        status_path_template: Status path, with ``{model}`` and ``{job_id}``.
        callback_base_url: The webhook receiver's public URL: requests with
            ``request_type="callback"`` and no ``callback_url`` are ended by its
            callbacks (see :class:`CallbackCredentials`).

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

    provider_name: ClassVar[str] = "apixo"
    request_model: ClassVar[type[BaseModel]] = ApixoTaskRequest

    base_url: str = Field(description="The APIXO API root (API_URL in its docs).")
    status_path_template: str = Field(
        default=APIXO_CONTRACT.status.path,
        description="Status path with {model} and {job_id} (undocumented by APIXO: our choice).",
    )

    def contract(self) -> JobApiContract:
        """APIXO's contract, polling at the block's ``status_path_template``."""
        return APIXO_CONTRACT.model_copy(
            update={"status": Endpoint(path=self.status_path_template)}
        )

    def parse_request(self, request: BaseModel | dict[str, Any], *, where: str = "") -> BaseModel:
        """Validate the request; callback mode without a URL needs the block's receiver.

        Raises:
            InvalidRequestError: naming the invalid fields, before anything is sent.
        """
        parsed = super().parse_request(request, where=where)
        if (
            isinstance(parsed, ApixoTaskRequest)
            and parsed.request_type == "callback"
            and parsed.callback_url is None
            and self.callback_spec() is None
        ):
            raise InvalidRequestError(
                f"invalid apixo request{f' {where}' if where else ''}: request_type "
                "'callback' needs a callback_url, or the block's callback_base_url "
                "(the prefect-pollers webhook receiver)",
                provider=self.provider,
            )
        return parsed

    def wants_callback(self, request: BaseModel) -> bool:
        """Callback-mode requests without their own ``callback_url``, when callbacks are on."""
        return (
            isinstance(request, ApixoTaskRequest)
            and request.request_type == "callback"
            and request.callback_url is None
            and self.callback_spec() is not None
        )

    def build_result(self, ref: JobRef, body: dict[str, Any]) -> ApixoTaskResult:
        """The result URLs from ``data.resultJson``, a JSON string."""
        data = body.get("data") or {}
        raw = data.get("resultJson")
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError("apixo success without a readable resultJson")
        urls = parsed.get("resultUrls") or []
        return ApixoTaskResult(
            job_id=ref.job_id,
            model=ref.context.get("model", ""),
            result_urls=[str(u) for u in urls] if isinstance(urls, list) else [],
            result=parsed,
            payload=data,
        )

    def default_policy(self, ref: JobRef) -> PollPolicy:
        """The guide's schedule for the job's model (:func:`apixo_policy`)."""
        return apixo_policy(ref.context.get("model", ""))
