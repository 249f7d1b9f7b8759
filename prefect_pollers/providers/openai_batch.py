"""OpenAI Batch: requests uploaded as a JSONL file, one batch per file, results as files.

Documented (the API reference and the official SDK's types): the input is uploaded
with ``POST /files`` (multipart, ``purpose=batch``), one line per request
(``custom_id``, ``method``, ``url``, ``body``), at most 50,000 requests and 200 MB;
``POST /batches`` creates the batch (``input_file_id``, ``endpoint``,
``completion_window: "24h"``, ``metadata``); its status goes ``validating``,
``in_progress``, ``finalizing`` to ``completed``, or ends ``failed`` (the input did
not validate), ``expired`` (the 24 h window passed: the finished requests' results
are kept) or ``cancelled``; ``output_file_id`` and ``error_file_id`` name the results
files (read at ``files/{id}/content``), one line per request in any order, the error
file holding the failed requests and the ``batch_expired`` ones.

Our choices (overridable in a subclass): the batch carries its idempotency key in
``metadata.prefect_pollers_key`` (OpenAI takes no ``Idempotency-Key``), so a create
whose answer was lost is looked for by listing the batches rather than given up on;
a request no results file mentions ends with the batch's own state (``cancelled``
for a cancelled batch; documented only as "partial results"); an uploaded file whose
create surely did not happen is deleted.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefect_pollers.engine import JobRef, PollPolicy, StatusMap
from prefect_pollers.providers.batch_spec import FindSpec, ProviderBatchSpec, UploadSpec
from prefect_pollers.providers.contract import CallbackSpec, Endpoint, JobApiContract
from prefect_pollers.providers.provider_batch import (
    ProviderBatchCredentials,
    RequestResult,
    provider_batch_policy,
)
from prefect_pollers.providers.signatures import StandardWebhooks

OpenAIEndpoint = Literal[
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
]
"""The endpoints a batch's requests may go to (the SDK's ``BatchCreateParams``)."""


class OpenAIRequest(BaseModel):
    """One request's body, as the endpoint takes it (``model`` and its parameters)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class OpenAIBatchResult(RequestResult):
    """One succeeded request: the endpoint's response.

    Attributes:
        status_code: The request's HTTP status (2xx).
        request_id: OpenAI's id of the request.
        body: The endpoint's response body (e.g. a chat completion).
    """

    status_code: int
    request_id: str | None = None
    body: dict[str, Any]


OPENAI_BATCH_CONTRACT = JobApiContract(
    submit=Endpoint(method="POST", path="batches"),
    status=Endpoint(path="batches/{job_id}"),
    status_field="status",
    error_code_field="errors.data[0].code",
    error_message_field="errors.data[0].message",
    status_map=StatusMap(
        succeeded=frozenset({"completed"}),
        failed=frozenset({"failed"}),
        cancelled=frozenset({"cancelled"}),
        expired=frozenset({"expired"}),
        pending=frozenset({"validating"}),
        running=frozenset({"in_progress", "finalizing", "cancelling"}),
    ),
    cancel=Endpoint(method="POST", path="batches/{job_id}/cancel"),
    # The project's webhooks: one URL per project (set in the dashboard), Standard
    # Webhooks signatures, a ``batch.<status>`` event naming the batch at ``data.id``.
    callback=CallbackSpec(url_in="none", scheme=StandardWebhooks(), job_id_field="data.id"),
)

OPENAI_BATCH_SPEC = ProviderBatchSpec(
    max_requests=50_000,
    max_bytes=200_000_000,
    request_line="{custom_id: custom_id, method: 'POST', url: endpoint, body: body}",
    upload=UploadSpec(path="files", fields={"purpose": "batch"}, delete_path="files/{file_id}"),
    create_body=(
        "{input_file_id: input_file_id, endpoint: endpoint, completion_window: '24h', "
        "metadata: metadata}"
    ),
    find=FindSpec(path="batches?limit=100"),
    results=("files/{output_file_id}/content", "files/{error_file_id}/content"),
    line_status="error.code || response.status_code < `300` && 'succeeded' || 'failed'",
    line_states=StatusMap(
        succeeded=frozenset({"succeeded"}),
        failed=frozenset({"failed"}),
        cancelled=frozenset({"batch_cancelled"}),
        expired=frozenset({"batch_expired"}),
    ),
    line_result="response",
    line_error_code="error.code || response.body.error.code || response.body.error.type",
    line_error_message="error.message || response.body.error.message",
    counts="request_counts",
)


class OpenAIBatchCredentials(ProviderBatchCredentials):
    """Credentials for OpenAI Batch: one line per item, packed into batches of 50,000.

    Attributes:
        api_key: The OpenAI API key (``sk-...``).
        base_url: The API root, ``https://api.openai.com/v1`` by default.
        endpoint: Where every request of the batches goes.
        max_requests_per_batch / max_bytes_per_batch: Lower the API's limits.

    Example:
        ```python
        from prefect_pollers import OpenAIBatchCredentials, run_provider_batch

        creds = OpenAIBatchCredentials(api_key="sk-...")
        outcomes = await run_provider_batch(creds, items)  # one outcome per item
        ```
    """

    _block_type_name = "OpenAI Batch Credentials"
    _block_type_slug = "openai-batch-credentials"
    _description = "Credentials for OpenAI Batch: many requests per job, results as files."
    _documentation_url = "https://platform.openai.com/docs/guides/batch"  # type: ignore[assignment]
    _code_example = """```python
from prefect_pollers import OpenAIBatchCredentials

creds = OpenAIBatchCredentials.load("BLOCK_NAME")
```"""

    provider_name: ClassVar[str] = "openai-batch"
    result_model: ClassVar[type[RequestResult]] = OpenAIBatchResult
    request_model: ClassVar[type[BaseModel]] = OpenAIRequest

    base_url: str = Field(default="https://api.openai.com/v1", description="The API root URL.")
    endpoint: OpenAIEndpoint = Field(
        default="/v1/chat/completions", description="The endpoint of every request."
    )
    idempotency_header: str | None = Field(
        default=None, description="OpenAI takes no idempotency header: the key goes in metadata."
    )

    def contract(self) -> JobApiContract:
        """OpenAI Batch's contract."""
        return OPENAI_BATCH_CONTRACT

    def api_batch_spec(self) -> ProviderBatchSpec:
        """OpenAI Batch's declaration."""
        return OPENAI_BATCH_SPEC

    @property
    def batch_endpoint(self) -> str:
        """The block's ``endpoint``."""
        return self.endpoint

    def request_result(self, batch_id: str, custom_id: str, raw: Any) -> OpenAIBatchResult:
        """The line's ``response``: its status code, request id and body."""
        return OpenAIBatchResult.model_validate(
            {**(raw if isinstance(raw, dict) else {}), "custom_id": custom_id, "job_id": batch_id}
        )

    def default_policy(self, ref: JobRef) -> PollPolicy:
        """:func:`provider_batch_policy`."""
        return provider_batch_policy()
