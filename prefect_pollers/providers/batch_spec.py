"""A provider batch as data: one remote job that carries many requests.

OpenAI Batch and Anthropic Message Batches take thousands of requests in one job,
keyed by the caller's ``custom_id``, and answer with a JSONL file of one line per
request. A :class:`ProviderBatchSpec` declares everything that differs between such
APIs: the limits a batch must keep, how an item becomes a request line, whether the
lines are uploaded as a file first, the create request, where the final status names
its results, and how a results line reads. The job itself (status, states, cancel,
rate limits) is the block's :class:`~prefect_pollers.providers.contract.JobApiContract`,
so its wait is any job's wait.

Every expression is JMESPath. The request line is built from
``{"custom_id": ..., "body": <the item's request>, "endpoint": <the block's>}``; the
create body from ``{"input_file_id": ..., "requests": [<lines>], "endpoint": ...,
"metadata": {"prefect_pollers_key": <the batch's idempotency key>}}``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefect_pollers.engine import StatusMap
from prefect_pollers.providers.contract import compiled, search

KEY_FIELD = "prefect_pollers_key"
"""The metadata field a created batch carries its idempotency key in, where it can."""


class UploadSpec(BaseModel):
    """The multipart upload of a batch's JSONL input before its create.

    Attributes:
        path: Where the file is posted (relative to base_url).
        file_field: The multipart field of the file.
        fields: The other form fields (e.g. ``purpose: batch``).
        file_id_field: JMESPath to the file id in the answer.
        delete_path: The file's delete path (``{file_id}``): an upload whose create
            surely did not happen is deleted, so uploads do not pile up.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    file_field: str = "file"
    fields: dict[str, str] = Field(default_factory=dict)
    file_id_field: str = "id"
    delete_path: str | None = None


class FindSpec(BaseModel):
    """How to find a created batch by its idempotency key (its metadata), to re-attach.

    A create whose answer was lost may have created the batch: where the API keeps
    metadata and lists batches, the batch is looked for instead of given up on.

    Attributes:
        path: The list request (relative to base_url), newest first.
        items: JMESPath to the batches of a page.
        key: JMESPath to a batch's idempotency key.
        cursor: JMESPath to the next page's cursor (null: the last page).
        cursor_param: The query parameter the cursor goes in.
        max_pages: Pages looked at before giving up (the newest batches come first).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    items: str = "data"
    key: str = f"metadata.{KEY_FIELD}"
    cursor: str = "has_more && last_id || null"
    cursor_param: str = "after"
    max_pages: int = Field(default=20, ge=1)


class ProviderBatchSpec(BaseModel):
    """What a provider-batch API declares besides its job contract.

    Attributes:
        max_requests: Requests in one provider batch at most.
        max_bytes: Bytes of one batch's input at most (its JSONL lines).
        max_request_bytes: Bytes of one request line at most (None: only
            ``max_bytes`` bounds it). An item over it is refused before anything
            is sent.
        custom_id_pattern: A regular expression every ``custom_id`` must match
            (an item whose key does not is refused before anything is sent).
        request_line: JMESPath building a request line from ``custom_id``,
            ``body`` and ``endpoint``.
        upload: The upload step, for an API that takes its input as a file.
        create_body: JMESPath building the create body from ``input_file_id``,
            ``requests``, ``endpoint`` and ``metadata``.
        find: How to find a batch by its idempotency key (None: the API keeps none).
        results: URL templates of the results files, naming fields of the final
            status (``files/{output_file_id}/content``, ``{results_url}``); one whose
            field is null is skipped. Absolute URLs must stay on base_url's origin.
        line_custom_id: JMESPath to a results line's ``custom_id``.
        line_status: JMESPath to a results line's raw outcome.
        line_states: Which raw outcomes mean which state (``succeeded``, ``failed``,
            ``cancelled``, ``expired``); anything else is ``failed``.
        line_result: JMESPath to a succeeded line's result.
        line_error_code: JMESPath to a line's error code.
        line_error_message: JMESPath to a line's error message.
        counts: JMESPath to the status's request counts (the progress artifact).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_requests: int = Field(ge=1)
    max_bytes: int = Field(ge=1)
    max_request_bytes: int | None = Field(default=None, ge=1)
    custom_id_pattern: str | None = None
    request_line: str
    upload: UploadSpec | None = None
    create_body: str
    find: FindSpec | None = None
    results: tuple[str, ...]
    line_custom_id: str = "custom_id"
    line_status: str
    line_states: StatusMap
    line_result: str
    line_error_code: str | None = None
    line_error_message: str | None = None
    counts: str | None = None

    @field_validator(
        "request_line",
        "create_body",
        "line_custom_id",
        "line_status",
        "line_result",
        "line_error_code",
        "line_error_message",
        "counts",
    )
    @classmethod
    def _valid_jmespath(cls, value: str | None) -> str | None:
        if value is not None:
            compiled(value)
        return value

    @field_validator("custom_id_pattern")
    @classmethod
    def _valid_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"custom_id_pattern {value!r} is not a regex: {exc}") from None
        return value

    def line_of(self, custom_id: str, body: Any, endpoint: str) -> Any:
        """The request line of one item."""
        return search(
            self.request_line, {"custom_id": custom_id, "body": body, "endpoint": endpoint}
        )

    def create_body_of(
        self,
        *,
        endpoint: str,
        key: str,
        input_file_id: str | None = None,
        requests: list[Any] | None = None,
    ) -> Any:
        """The create request's body."""
        return search(
            self.create_body,
            {
                "input_file_id": input_file_id,
                "requests": requests,
                "endpoint": endpoint,
                "metadata": {KEY_FIELD: key},
            },
        )
