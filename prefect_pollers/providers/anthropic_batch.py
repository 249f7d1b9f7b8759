"""Anthropic Message Batches: the requests in the create body, results as one JSONL file.

Documented (the API reference and the official SDK's types): ``POST
/v1/messages/batches`` takes ``{"requests": [{"custom_id", "params"}]}``, at most
100,000 requests or 256 MB, each ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$`` and
unique; every request sends ``x-api-key`` and ``anthropic-version``; the batch's
``processing_status`` goes ``in_progress`` (``canceling`` after a cancel) to
``ended``, when ``results_url`` names a JSONL file of one line per request
(``succeeded`` with its message, ``errored`` with its error, ``canceled``,
``expired``) and ``request_counts`` counts each. The API keeps no metadata on a
batch and takes no idempotency key.

Derived state (data, in ``status_field``): an ended batch whose cancel was asked is
``cancelled``; one whose every request errored is ``failed``; one whose every request
expired is ``expired``; any other ended batch ``succeeded`` (its requests each get
their own outcome from the results file either way).

Our choices (overridable): ``anthropic-version: 2023-06-01`` (``anthropic_version``);
a create whose answer was lost cannot be looked up (no metadata), so its items end in
an error naming the key and the ledger command, as for any submit that may have
created its job.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from prefect_pollers.engine import JobRef, PollPolicy, StatusMap
from prefect_pollers.providers.batch_spec import ProviderBatchSpec
from prefect_pollers.providers.contract import Endpoint, JobApiContract
from prefect_pollers.providers.provider_batch import (
    ProviderBatchCredentials,
    RequestResult,
    provider_batch_policy,
)

DERIVED_STATUS = (
    "processing_status != 'ended' && processing_status"
    " || cancel_initiated_at && 'ended:canceled'"
    " || request_counts.succeeded == `0` && request_counts.errored > `0`"
    " && request_counts.expired == `0` && 'ended:errored'"
    " || request_counts.succeeded == `0` && request_counts.expired > `0`"
    " && request_counts.errored == `0` && 'ended:expired'"
    " || processing_status"
)
"""The batch's state from several fields (JMESPath): see the module."""


class AnthropicMessageRequest(BaseModel):
    """One request's ``params``: a Messages API request (not streamed)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(min_length=1)


class AnthropicBatchResult(RequestResult):
    """One succeeded request: its message.

    Attributes:
        message: The Messages API response (``content``, ``usage``, ``stop_reason``).
    """

    message: dict[str, Any]


ANTHROPIC_BATCH_CONTRACT = JobApiContract(
    auth_header="x-api-key",
    auth_scheme="",
    submit=Endpoint(method="POST", path="v1/messages/batches"),
    status=Endpoint(path="v1/messages/batches/{job_id}"),
    status_field=DERIVED_STATUS,
    phase_field="processing_status",
    status_map=StatusMap(
        succeeded=frozenset({"ended"}),
        failed=frozenset({"ended:errored"}),
        cancelled=frozenset({"ended:canceled"}),
        expired=frozenset({"ended:expired"}),
        running=frozenset({"in_progress", "canceling"}),
    ),
    cancel=Endpoint(method="POST", path="v1/messages/batches/{job_id}/cancel"),
)

ANTHROPIC_BATCH_SPEC = ProviderBatchSpec(
    max_requests=100_000,
    max_bytes=256_000_000,
    custom_id_pattern=r"^[a-zA-Z0-9_-]{1,64}$",
    request_line="{custom_id: custom_id, params: body}",
    create_body="{requests: requests}",
    results=("{results_url}",),
    line_status="result.type",
    line_states=StatusMap(
        succeeded=frozenset({"succeeded"}),
        failed=frozenset({"errored"}),
        cancelled=frozenset({"canceled"}),
        expired=frozenset({"expired"}),
    ),
    line_result="result.message",
    line_error_code="result.error.error.type",
    line_error_message="result.error.error.message",
    counts="request_counts",
)


class AnthropicBatchCredentials(ProviderBatchCredentials):
    """Credentials for Anthropic Message Batches: items packed into batches of 100,000.

    Attributes:
        api_key: The Anthropic API key.
        base_url: The API root, ``https://api.anthropic.com`` by default.
        anthropic_version: The ``anthropic-version`` header of every request.
        max_requests_per_batch / max_bytes_per_batch: Lower the API's limits.

    Example:
        ```python
        from prefect_pollers import AnthropicBatchCredentials, run_provider_batch

        creds = AnthropicBatchCredentials(api_key="sk-ant-...")
        outcomes = await run_provider_batch(creds, items)  # one outcome per item
        ```
    """

    _block_type_name = "Anthropic Batch Credentials"
    _block_type_slug = "anthropic-batch-credentials"
    _description = "Credentials for Anthropic Message Batches: many requests per job."
    _documentation_url = "https://docs.anthropic.com/en/docs/build-with-claude/batch-processing"  # type: ignore[assignment]
    _code_example = """```python
from prefect_pollers import AnthropicBatchCredentials

creds = AnthropicBatchCredentials.load("BLOCK_NAME")
```"""

    provider_name: ClassVar[str] = "anthropic-batch"
    result_model: ClassVar[type[RequestResult]] = AnthropicBatchResult
    request_model: ClassVar[type[BaseModel]] = AnthropicMessageRequest

    base_url: str = Field(default="https://api.anthropic.com", description="The API root URL.")
    anthropic_version: str = Field(
        default="2023-06-01", description="The anthropic-version header of every request."
    )
    idempotency_header: str | None = Field(
        default=None, description="Anthropic takes no idempotency header."
    )

    def contract(self) -> JobApiContract:
        """The contract, with the block's ``anthropic-version`` header."""
        return ANTHROPIC_BATCH_CONTRACT.model_copy(
            update={"headers": {"anthropic-version": self.anthropic_version}}
        )

    def api_batch_spec(self) -> ProviderBatchSpec:
        """Anthropic Message Batches' declaration."""
        return ANTHROPIC_BATCH_SPEC

    @property
    def batch_endpoint(self) -> str:
        """The Messages API (requests name none: every one is a message)."""
        return "/v1/messages"

    def request_result(self, batch_id: str, custom_id: str, raw: Any) -> AnthropicBatchResult:
        """The line's message."""
        return AnthropicBatchResult(custom_id=custom_id, job_id=batch_id, message=raw)

    def default_policy(self, ref: JobRef) -> PollPolicy:
        """:func:`~prefect_pollers.providers.provider_batch.provider_batch_policy`."""
        return provider_batch_policy()
