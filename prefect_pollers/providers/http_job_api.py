"""Any JSON-over-HTTP job API, declared as data (``HttpJobApi``).

In the spirit of botocore's waiters: where the job id and the status live in the
JSON, and which raw status values mean succeeded / failed / cancelled / expired,
are declared, not coded. Every path into a JSON body is a JMESPath expression
(the ``jmespath`` package, as botocore uses); the submit body is one too, so a
multiselect hash such as ``{task: {kind: kind, params: params}}`` reshapes the
request. The submit path takes request fields (``{name}``); the status, result and
cancel templates take ``{job_id}`` and any top-level field of the submit response
(``{status_url}``), the result template fields of the final status too, each value
percent-encoded into one path segment, or, for a template that is one field alone,
the whole URL the API named (absolute URLs must stay on base_url's origin). What a
template names is kept in the job ref's context at submit, so resumed waits have it.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from prefect_pollers.engine import InvalidRequestError, JobRef, PollPolicy, StatusMap
from prefect_pollers.engine.http import RateLimitReset
from prefect_pollers.providers.callbacks import CallbackCredentials
from prefect_pollers.providers.contract import (
    BasicAuth,
    CallbackSpec,
    CallbackUrlIn,
    EndedState,
    Endpoint,
    JobApiContract,
    compiled,
    path_field_problems,
    search,
    template_names,
)
from prefect_pollers.providers.protocol import JobResult
from prefect_pollers.providers.signatures import StandardWebhooks

_EXPRESSION_FIELDS = (
    "submit_body",
    "job_id_field",
    "status_field",
    "phase_field",
    "error_code_field",
    "error_message_field",
    "result_field",
    "callback_job_id_field",
    "callback_status_body",
)


class HttpJobRequest(BaseModel):
    """A request to a declared API: any JSON object (shaped by ``submit_body``)."""

    model_config = ConfigDict(extra="allow")


class HttpJobResult(JobResult):
    """The result of a succeeded job of a declared API.

    Attributes:
        job_id: The job id.
        output: What ``result_field`` selects (from the result response if a
            ``result_url`` is declared, else from the final status).
        payload: The whole response ``output`` was taken from.
    """

    output: Any = None
    payload: dict[str, Any] = Field(default_factory=dict)


class HttpJobApi(CallbackCredentials[HttpJobResult]):
    """A job API described as data: point it at an API we have never seen, no Python.

    Attributes:
        api_name: A short name for logs, errors, task run names and events.
        base_url: The API root.
        api_key: The API key, sent in ``auth_header``; empty: none is sent (an API
            that takes ``username`` and ``password``, or no credentials).
        auth_header: The header that carries the key.
        auth_scheme: Put before the key (``Bearer``); empty to send the key alone.
        headers: Fixed headers sent with every request (an API version); not
            secret (they show in the block's repr): keys go in ``api_key``.
        username / password: HTTP Basic credentials, sent in ``Authorization``
            (with an ``api_key`` too, ``auth_header`` must be another header).
        submit_method: HTTP method of the submit request.
        submit_path: Path of the submit request; ``{name}`` takes the request's
            field ``name`` (a request without it is refused before anything is sent).
        submit_body: JMESPath applied to the request to build the body (None: as is).
        submit_exclude: Request fields kept out of the body; without a
            ``submit_body``, the fields ``submit_path`` names are kept out too.
        job_id_field: JMESPath to the job id in the submit response.
        status_url: Status URL template: relative to base_url, naming ``{job_id}``
            and/or top-level fields of the submit response (``{status_url}`` alone:
            the URL the API answered, which must be on base_url's origin).
        status_field: JMESPath to the raw status in a status response; it may
            derive one from several fields (``error && 'FAILED' || status``).
        phase_field: JMESPath to a phase, if the API has phases apart from its status.
        succeeded / failed / cancelled / expired: Raw status values of each outcome.
        pending: Known values of a job not started yet (queued).
        running: Known non-terminal values (others count as running, warned once).
        error_code_field / error_message_field: JMESPaths to the failure's code and text.
        result_url: Result URL template, if results live apart: like ``status_url``,
            and it may name fields of the final status too (``{response_url}``).
        result_field: JMESPath to the result in that response (or in the final status).
        result_ended: HTTP statuses of a result request that mean the job ended
            otherwise (``{499: "cancelled"}``: fal's cancelled requests).
        cancel_method / cancel_url: The cancel request, if the API has one (a
            template like ``status_url``).
        policy: The poll policy of waits on this API.
        ratelimit_reset: How the API states ``X-RateLimit-Reset``: ``epoch``
            seconds (the default) or ``delta``, seconds from now.
        callback_url_in: Where a submit sends the callback URL: ``body`` (the
            ``callback_url_field`` body field), ``query`` (the query parameter
            ``callback_url_field``) or ``none``: the API calls one URL per account,
            set in its dashboard (``{callback_base_url}/hooks/{api_name}/-``), and
            a callback is matched to its job by ``callback_job_id_field``.
        callback_url_field: The body field's dotted path, or the query
            parameter's name, for an API that calls back when a job ends (with
            ``callback_base_url`` and ``webhook_secret`` set: callbacks on).
        callback_job_id_field: JMESPath to the job id in a callback body.
        callback_status_body: JMESPath turning a callback body into the shape of a
            status response (for ``trust_signed_callbacks``; None: it is one).
        callback_scheme: ``standard-webhooks`` (the default here),
            ``capability-url``, or any
            :data:`~prefect_pollers.providers.signatures.SignatureScheme`.
        deduplicates_submits: The API documents that a submit re-sent with the
            same ``idempotency_header`` value creates no second job: a submit whose
            answer was lost is then re-sent under the same key. Off by default (an
            unknown API promises nothing): such a submit ends in an error saying the
            job may exist.
        submit_not_created_statuses: HTTP statuses (e.g. 503) the API documents
            answering a submit with without creating the job, so they are retried.
            Empty by default: a 502/503/504 may come from a proxy whose upstream
            created the job all the same.

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
    api_key: SecretStr = Field(
        default=SecretStr(""),
        description="The API key; empty for an API that takes a username and password.",
    )
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Fixed headers sent with every request (not secret: keys go in api_key).",
    )
    username: str | None = Field(default=None, description="HTTP Basic user name.")
    password: SecretStr | None = Field(default=None, description="HTTP Basic password.")
    submit_method: str = "POST"
    submit_path: str = "jobs"
    submit_body: str | None = None
    submit_exclude: list[str] = Field(default_factory=list)
    job_id_field: str = "id"
    status_url: str = "jobs/{job_id}"
    status_field: str = "status"
    phase_field: str | None = None
    succeeded: list[str] = Field(default_factory=lambda: ["succeeded"], min_length=1)
    failed: list[str] = Field(default_factory=lambda: ["failed"])
    cancelled: list[str] = Field(default_factory=list)
    expired: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)
    running: list[str] = Field(default_factory=list)
    error_code_field: str | None = None
    error_message_field: str | None = None
    result_url: str | None = None
    result_field: str | None = None
    result_ended: dict[int, EndedState] = Field(
        default_factory=dict,
        description="HTTP statuses of a result request that mean the job ended otherwise.",
    )
    cancel_method: str = "POST"
    cancel_url: str | None = None
    policy: PollPolicy = Field(default_factory=PollPolicy)
    ratelimit_reset: RateLimitReset = "epoch"
    callback_url_in: CallbackUrlIn = "body"
    callback_url_field: str | None = None
    callback_job_id_field: str = "id"
    callback_status_body: str | None = None
    deduplicates_submits: bool = Field(
        default=False,
        description="The API documents that a submit re-sent with the same idempotency_header "
        "value creates no second job (then a submit whose answer was lost is re-sent).",
    )
    submit_not_created_statuses: list[int] = Field(
        default_factory=list,
        description="HTTP statuses the API documents answering a submit with without "
        "creating the job (a proxy's 502/503/504 promises nothing: empty by default).",
    )

    @field_validator(*_EXPRESSION_FIELDS)
    @classmethod
    def _valid_jmespath(cls, value: str | None) -> str | None:
        if value is not None:
            compiled(value)
        return value

    @field_validator("status_url", "result_url", "cancel_url")
    @classmethod
    def _valid_template(cls, value: str | None) -> str | None:
        if value is not None and not template_names(value):
            raise ValueError(
                f"URL template {value!r} names nothing of the job: give {{job_id}} or a "
                "field of the submit response such as {status_url}"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _no_auth_in_headers(cls, value: dict[str, str]) -> dict[str, str]:
        if any(name.lower() == "authorization" for name in value):
            raise ValueError(
                "Authorization goes in api_key (or username/password), not in headers: "
                "headers show in the block's repr"
            )
        return value

    @model_validator(mode="after")
    def _one_way_per_header(self) -> HttpJobApi:
        if self.callback_url_in == "query" and self.callback_url_field is None:
            raise ValueError("callback_url_in='query' needs callback_url_field (its name)")
        if (self.username is None) != (self.password is None):
            raise ValueError("HTTP Basic auth needs both username and password")
        if (
            self.username is not None
            and self.api_key.get_secret_value()
            and self.auth_header.lower() == "authorization"
        ):
            raise ValueError(
                "api_key and username/password would both go in the Authorization header: "
                "set auth_header to the header the API reads the key from, or leave api_key empty"
            )
        return self

    @property
    def provider(self) -> str:
        """The declared API's name."""
        return self.api_name

    def contract(self) -> JobApiContract:
        """The contract these fields declare."""
        templates = (self.status_url, self.result_url or "", self.cancel_url or "")
        return JobApiContract(
            headers=self.headers,
            auth_header=self.auth_header,
            auth_scheme=self.auth_scheme,
            basic_auth=BasicAuth(username=self.username, password=self.password)
            if self.username is not None and self.password is not None
            else None,
            submit=Endpoint(method=self.submit_method, path=self.submit_path),
            submit_body=self.submit_body,
            submit_exclude=frozenset(self.submit_exclude)
            | frozenset([] if self.submit_body else template_names(self.submit_path)),
            submit_drop_nulls=False,
            job_id_field=self.job_id_field,
            response_context=frozenset(
                name for url in templates for name in template_names(url) if name != "job_id"
            ),
            status=Endpoint(path=self.status_url),
            status_field=self.status_field,
            phase_field=self.phase_field,
            error_code_field=self.error_code_field,
            error_message_field=self.error_message_field,
            ratelimit_reset=self.ratelimit_reset,
            status_map=StatusMap(
                succeeded=frozenset(self.succeeded),
                failed=frozenset(self.failed),
                cancelled=frozenset(self.cancelled),
                expired=frozenset(self.expired),
                pending=frozenset(self.pending),
                running=frozenset(self.running),
            ),
            result=Endpoint(path=self.result_url) if self.result_url else None,
            result_ended=self.result_ended,
            cancel=Endpoint(method=self.cancel_method, path=self.cancel_url)
            if self.cancel_url
            else None,
            callback=CallbackSpec(
                url_in=self.callback_url_in,
                url_field=self.callback_url_field,
                scheme=self.callback_scheme or StandardWebhooks(),
                job_id_field=self.callback_job_id_field,
                status_body=self.callback_status_body,
            )
            if self.callback_url_field or self.callback_url_in == "none"
            else None,
            dedup_header=self.idempotency_header if self.deduplicates_submits else None,
            submit_not_created_statuses=frozenset(self.submit_not_created_statuses),
        )

    def parse_request(self, request: BaseModel | dict[str, Any], *, where: str = "") -> BaseModel:
        """Validate a request, and that it has every field ``submit_path`` names.

        Raises:
            InvalidRequestError: naming each missing or unusable path field (or the
                request's invalid fields), before anything is sent.
        """
        parsed = super().parse_request(request, where=where)
        problems = path_field_problems(self.submit_path, parsed.model_dump(mode="json"))
        if problems:
            raise InvalidRequestError(
                f"invalid {self.provider} request{f' {where}' if where else ''}: "
                + "; ".join(problems),
                provider=self.provider,
            )
        return parsed

    def pool_key(self) -> tuple[str, str]:
        """The base key, with the password in its digest (a repr shows only asterisks)."""
        kind, digest = super().pool_key()
        if self.password is None:
            return kind, digest
        secret = digest + "\0" + self.password.get_secret_value()
        return kind, hashlib.sha256(secret.encode()).hexdigest()[:24]

    def build_result(self, ref: JobRef, body: dict[str, Any]) -> HttpJobResult:
        """What ``result_field`` selects in the result (or final status) response."""
        output = search(self.result_field, body) if self.result_field else body
        return HttpJobResult(job_id=ref.job_id, output=output, payload=body)

    def default_policy(self, ref: JobRef) -> PollPolicy:
        """The block's ``policy``."""
        return self.policy
