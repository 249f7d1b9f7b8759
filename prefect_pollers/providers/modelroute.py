"""ModelRoute executions (``GET /executions/{id}``, ``GET /executions/{id}/result``).

Documented: Bearer auth; terminal statuses ``COMPLETED``, ``FAILED`` (with
``error.code`` and ``error.message``), ``CANCELLED`` and ``EXPIRED``; the result
endpoint's shape (``output``, ``usage``, ``cost`` as a decimal string,
``latency_ms``); ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` on every response
and 429 with ``Retry-After`` over the limit; poll every 2 s when testing, 3-5 s in
small apps.

Every request of one credentials block goes through one rate-limit gate: when
``X-RateLimit-Remaining`` reaches 0, all waits sharing the block hold until
``X-RateLimit-Reset`` instead of collecting 429s.

Not documented, our choices (overridable): executions are created with
``POST /executions`` and ``{"model": ..., "input": {...}}`` (``create_path``), the
id comes back in ``id`` (or ``execution_id``), and the non-terminal statuses are
``QUEUED`` and ``RUNNING`` (others count as running, with one warning).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, Field, ValidationError

from prefect_pollers.engine import (
    JobRef,
    JobStatus,
    JsonReply,
    MalformedResponseError,
    PollPolicy,
    StatusMap,
)
from prefect_pollers.providers.base import JobApiCredentials


class ModelRouteExecutionRequest(BaseModel):
    """An execution to run: a model and its input."""

    model: str = Field(min_length=1, description="The model to execute.")
    input: dict[str, Any] = Field(default_factory=dict, description="The model input.")


class ModelRouteUsage(BaseModel):
    """Token usage of an execution."""

    input_tokens: int = 0
    output_tokens: int = 0


class ModelRouteResult(BaseModel):
    """The result of a completed execution, as ``/executions/{id}/result`` returns it."""

    execution_id: str
    status: str
    output: Any = None
    usage: ModelRouteUsage = Field(default_factory=ModelRouteUsage)
    cost: Decimal | None = None
    latency_ms: int | None = None

    @property
    def job_id(self) -> str:
        """The execution id, under the name every result model shares."""
        return self.execution_id


def modelroute_policy() -> PollPolicy:
    """The guide's small-app pace: a first look after 2 s, then every 3 s, 10 min at most."""
    return PollPolicy(initial_delay=2.0, interval=3.0, max_interval=5.0, deadline=600.0)


class ModelRouteCredentials(JobApiCredentials):
    """Credentials and client for ModelRoute executions.

    Attributes:
        api_key: The ModelRoute API key (``sk_...``).
        base_url: The API root, ``https://api.modelroute.ai/v1`` by default.
        create_path: Where executions are created (not documented by ModelRoute).

    Example:
        ```python
        from prefect_pollers import ModelRouteCredentials, run_job

        creds = ModelRouteCredentials(api_key="sk_...")
        result = await run_job(creds, {"model": "image-gen", "input": {"prompt": "a fox"}})
        print(result.cost, result.usage.output_tokens)
        ```
    """

    _block_type_name = "ModelRoute Credentials"
    _block_type_slug = "modelroute-credentials"
    _description = "Credentials for ModelRoute executions; waits share its rate limit."
    _documentation_url = "https://api.modelroute.ai/v1"
    _code_example = """```python
from prefect_pollers import ModelRouteCredentials

creds = ModelRouteCredentials.load("BLOCK_NAME")
```"""

    provider: ClassVar[str] = "modelroute"
    request_model: ClassVar[type[BaseModel]] = ModelRouteExecutionRequest
    status_map: ClassVar[StatusMap] = StatusMap(
        succeeded={"COMPLETED"},
        failed={"FAILED"},
        cancelled={"CANCELLED"},
        expired={"EXPIRED"},
        pending={"QUEUED"},
        running={"RUNNING"},
    )

    base_url: str = Field(
        default="https://api.modelroute.ai/v1", description="The ModelRoute API root URL."
    )
    create_path: str = Field(
        default="executions",
        description="Path that creates an execution (undocumented by ModelRoute: our choice).",
    )

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"}

    def submit_request(self, request: BaseModel) -> tuple[str, str, dict[str, Any]]:
        return "POST", self.create_path, request.model_dump()

    def read_submitted(self, request: BaseModel, reply: JsonReply) -> JobRef:
        body = reply.body
        return self.job_ref(reply, body.get("id") or body.get("execution_id"), "id")

    def status_path(self, ref: JobRef) -> str:
        return f"executions/{ref.job_id}"

    def read_status(self, job_id: str, reply: JsonReply) -> JobStatus:
        return self.status_with_error_object(job_id, reply)

    async def fetch_result(self, ref: JobRef, status: JobStatus) -> ModelRouteResult:
        reply = await self.request("GET", f"executions/{ref.job_id}/result", job_id=ref.job_id,
                                   polling=True)
        try:
            return ModelRouteResult.model_validate({"execution_id": ref.job_id, **reply.body})
        except ValidationError as exc:
            raise MalformedResponseError(
                f"modelroute result does not match the documented shape: {exc.errors()[0]['msg']}"
                f" at {'.'.join(str(p) for p in exc.errors()[0]['loc'])}",
                provider=self.provider, job_id=ref.job_id, path=reply.path,
                http_status=reply.status_code,
            ) from None

    def default_policy(self, ref: JobRef) -> PollPolicy:
        return modelroute_policy()
