"""Any JSON-over-HTTP job API, declared as data (``HttpJobApi``).

In the spirit of botocore's waiters: where the job id and the status live in the
JSON, and which raw status values mean succeeded / failed / cancelled / expired,
are declared, not coded. Every path into a JSON body is a JMESPath expression
(the ``jmespath`` package, as botocore uses); the submit body is one too, so a
multiselect hash such as ``{task: {kind: kind, params: params}}`` reshapes the
request. URL templates take ``{job_id}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefect_pollers.engine import (
    JobRef,
    JobStatus,
    JsonReply,
    PollPolicy,
    StatusMap,
)
from prefect_pollers.providers.base import JobApiCredentials

_EXPRESSION_FIELDS = (
    "submit_body", "job_id_field", "status_field", "phase_field",
    "error_code_field", "error_message_field", "result_field",
)


class HttpJobRequest(BaseModel):
    """A request to a declared API: any JSON object (shaped by ``submit_body``)."""

    model_config = ConfigDict(extra="allow")


class HttpJobResult(BaseModel):
    """The result of a succeeded job of a declared API.

    Attributes:
        job_id: The job id.
        output: What ``result_field`` selects (from the result response if a
            ``result_url`` is declared, else from the final status).
        payload: The whole response ``output`` was taken from.
    """

    job_id: str
    output: Any = None
    payload: dict[str, Any] = Field(default_factory=dict)


class HttpJobApi(JobApiCredentials):
    """A job API described as data: point it at an API we have never seen, no Python.

    Attributes:
        api_name: A short name for logs, errors, task run names and events.
        base_url: The API root.
        auth_header: The header that carries the key.
        auth_scheme: Put before the key (``Bearer``); empty to send the key alone.
        submit_method: HTTP method of the submit request.
        submit_path: Path of the submit request.
        submit_body: JMESPath applied to the request to build the body (None: as is).
        job_id_field: JMESPath to the job id in the submit response.
        status_url: Status URL template (relative to base_url), with ``{job_id}``.
        status_field: JMESPath to the raw status in a status response.
        phase_field: JMESPath to a phase, if the API has phases apart from its status.
        succeeded / failed / cancelled / expired: Raw status values of each outcome.
        running: Known non-terminal values (others count as running, warned once).
        error_code_field / error_message_field: JMESPaths to the failure's code and text.
        result_url: Result URL template with ``{job_id}``, if results live apart.
        result_field: JMESPath to the result in that response (or in the final status).
        cancel_method / cancel_url: The cancel request, if the API has one.
        policy: The poll policy of waits on this API.

    Example:
        ```python
        from prefect_pollers import HttpJobApi

        api = HttpJobApi(
            api_name="render", base_url="https://render.example.com/v2",
            api_key="...", auth_header="X-Auth-Token", auth_scheme="",
            submit_path="tasks", submit_body="{task: {kind: kind, params: params}}",
            job_id_field="task.uid", status_url="tasks/{job_id}",
            status_field="task.state.name", succeeded=["DONE"], failed=["ERROR"],
            cancelled=["ABORTED"], expired=["TIMED_OUT"], running=["QUEUED", "WORKING"],
            error_code_field="task.state.reason.code",
            error_message_field="task.state.reason.text",
            result_url="tasks/{job_id}/output", result_field="output",
            cancel_url="tasks/{job_id}/abort",
        )
        ```
    """

    _block_type_name = "HTTP Job API"
    _block_type_slug = "http-job-api"
    _description = (
        "Any JSON-over-HTTP job API declared as data: submit, status, outcomes, result and "
        "cancel, with JMESPath expressions."
    )
    _code_example = """```python
from prefect_pollers import HttpJobApi

api = HttpJobApi.load("BLOCK_NAME")
```"""

    request_model: ClassVar[type[BaseModel]] = HttpJobRequest

    api_name: str = Field(default="http-job-api", pattern=r"^[a-z0-9][a-z0-9-]*$")
    base_url: str = Field(description="The API root URL.")
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    submit_method: str = "POST"
    submit_path: str = "jobs"
    submit_body: str | None = None
    job_id_field: str = "id"
    status_url: str = "jobs/{job_id}"
    status_field: str = "status"
    phase_field: str | None = None
    succeeded: list[str] = Field(default_factory=lambda: ["succeeded"], min_length=1)
    failed: list[str] = Field(default_factory=lambda: ["failed"])
    cancelled: list[str] = Field(default_factory=list)
    expired: list[str] = Field(default_factory=list)
    running: list[str] = Field(default_factory=list)
    error_code_field: str | None = None
    error_message_field: str | None = None
    result_url: str | None = None
    result_field: str | None = None
    cancel_method: str = "POST"
    cancel_url: str | None = None
    policy: PollPolicy = Field(default_factory=PollPolicy)

    @field_validator(*_EXPRESSION_FIELDS)
    @classmethod
    def _valid_jmespath(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                jmespath.compile(value)
            except JMESPathError as exc:
                raise ValueError(f"not a valid JMESPath expression {value!r}: {exc}") from None
        return value

    @field_validator("status_url", "result_url", "cancel_url")
    @classmethod
    def _valid_template(cls, value: str | None) -> str | None:
        if value is not None and "{job_id}" not in value:
            raise ValueError(f"URL template {value!r} must contain {{job_id}}")
        return value

    @property
    def provider(self) -> str:  # type: ignore[override]
        """The declared API's name."""
        return self.api_name

    def get_status_map(self) -> StatusMap:
        return StatusMap(
            succeeded=frozenset(self.succeeded), failed=frozenset(self.failed),
            cancelled=frozenset(self.cancelled), expired=frozenset(self.expired),
            running=frozenset(self.running),
        )

    def auth_headers(self) -> dict[str, str]:
        key = self.api_key.get_secret_value()
        return {self.auth_header: f"{self.auth_scheme} {key}" if self.auth_scheme else key}

    def submit_request(self, request: BaseModel) -> tuple[str, str, dict[str, Any]]:
        data = request.model_dump()
        body = jmespath.search(self.submit_body, data) if self.submit_body else data
        return self.submit_method, self.submit_path, body

    def read_submitted(self, request: BaseModel, reply: JsonReply) -> JobRef:
        return self.job_ref(reply, jmespath.search(self.job_id_field, reply.body),
                            self.job_id_field)

    @staticmethod
    def fill(template: str, ref: JobRef) -> str:
        """Fill a URL template with the job id."""
        return template.replace("{job_id}", ref.job_id)

    def status_path(self, ref: JobRef) -> str:
        return self.fill(self.status_url, ref)

    def _search(self, expression: str | None, body: dict[str, Any]) -> Any:
        return jmespath.search(expression, body) if expression else None

    def read_status(self, job_id: str, reply: JsonReply) -> JobStatus:
        body = reply.body
        phase = self._search(self.phase_field, body)
        return self.make_status(
            job_id,
            reply,
            self._search(self.status_field, body),
            phase=str(phase) if phase is not None else None,
            error_code=self._search(self.error_code_field, body),
            error_message=self._search(self.error_message_field, body),
        )

    async def fetch_result(self, ref: JobRef, status: JobStatus) -> HttpJobResult:
        payload = status.payload
        if self.result_url:
            reply = await self.request(
                "GET", self.fill(self.result_url, ref), job_id=ref.job_id, polling=True
            )
            payload = reply.body
        output = self._search(self.result_field, payload) if self.result_field else payload
        return HttpJobResult(job_id=ref.job_id, output=output, payload=payload)

    async def cancel(self, ref: JobRef) -> bool:
        if not self.cancel_url:
            return False
        await self.request(self.cancel_method, self.fill(self.cancel_url, ref), job_id=ref.job_id)
        return True

    def default_policy(self, ref: JobRef) -> PollPolicy:
        return self.policy
