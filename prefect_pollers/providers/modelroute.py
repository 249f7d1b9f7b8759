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

from pydantic import BaseModel, Field

from prefect_pollers.engine import JobRef, PollPolicy, StatusMap
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.contract import Endpoint, JobApiContract
from prefect_pollers.providers.protocol import JobResult


class ModelRouteExecutionRequest(BaseModel):
    """An execution to run: a model and its input."""

    model: str = Field(min_length=1, description="The model to execute.")
    input: dict[str, Any] = Field(default_factory=dict, description="The model input.")


class ModelRouteUsage(BaseModel):
    """Token usage of an execution."""

    input_tokens: int = 0
    output_tokens: int = 0


class ModelRouteResult(JobResult):
    """The result of a completed execution, as ``/executions/{id}/result`` returns it."""

    status: str
    output: Any = None
    usage: ModelRouteUsage = Field(default_factory=ModelRouteUsage)
    cost: Decimal | None = None
    latency_ms: int | None = None

    @property
    def execution_id(self) -> str:
        """The execution id (ModelRoute's name for the job id)."""
        return self.job_id


def modelroute_policy() -> PollPolicy:
    """The guide's small-app pace: a first look after 2 s, then every 3 s, 10 min at most."""
    return PollPolicy(initial_delay=2.0, interval=3.0, max_interval=5.0, deadline=600.0)


MODELROUTE_CONTRACT = JobApiContract(
    submit=Endpoint(method="POST", path="executions"),
    job_id_field="id || execution_id",
    status=Endpoint(path="executions/{job_id}"),
    status_field="status",
    error_code_field="error.code",
    error_message_field="error.message",
    status_map=StatusMap(
        succeeded=frozenset({"COMPLETED"}),
        failed=frozenset({"FAILED"}),
        cancelled=frozenset({"CANCELLED"}),
        expired=frozenset({"EXPIRED"}),
        pending=frozenset({"QUEUED"}),
        running=frozenset({"RUNNING"}),
    ),
    result=Endpoint(path="executions/{job_id}/result"),
    # The guide documents no create request, so no idempotency header and no 5xx that
    # surely created nothing: a lost submit answer stays "may have created".
    dedup_header=None,
    submit_not_created_statuses=frozenset(),
)
"""ModelRoute's documented contract, with our choice for creating an execution."""


class ModelRouteCredentials(JobApiCredentials[ModelRouteResult]):
    """Credentials for ModelRoute executions.

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
    _documentation_url = "https://api.modelroute.ai/v1"  # type: ignore[assignment]
    _code_example = """```python
from prefect_pollers import ModelRouteCredentials

creds = ModelRouteCredentials.load("BLOCK_NAME")
```"""

    provider_name: ClassVar[str] = "modelroute"
    request_model: ClassVar[type[BaseModel]] = ModelRouteExecutionRequest

    base_url: str = Field(
        default="https://api.modelroute.ai/v1", description="The ModelRoute API root URL."
    )
    create_path: str = Field(
        default="executions",
        description="Path that creates an execution (undocumented by ModelRoute: our choice).",
    )

    def contract(self) -> JobApiContract:
        """ModelRoute's contract, creating executions at the block's ``create_path``."""
        return MODELROUTE_CONTRACT.model_copy(
            update={"submit": Endpoint(method="POST", path=self.create_path)}
        )

    def build_result(self, ref: JobRef, body: dict[str, Any]) -> ModelRouteResult:
        """The result endpoint's body, typed (``cost`` as a ``Decimal``)."""
        return ModelRouteResult.model_validate({**body, "job_id": ref.job_id})

    def default_policy(self, ref: JobRef) -> PollPolicy:
        """The guide's small-app pace (:func:`modelroute_policy`)."""
        return modelroute_policy()
