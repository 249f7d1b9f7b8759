"""A job API's wire contract as data: where things are, not code that finds them.

In the spirit of botocore's waiters: the submit request, where the job id and the
status live in the JSON, which raw statuses end the job and how, where results
live and how to cancel are declared. Every path into a JSON body is a JMESPath
expression (so ``simulation_id || id`` reads the first present of two fields); a
URL template takes ``{job_id}`` and the names of the job ref's context (e.g.
APIXO's ``{model}``), or for the submit path the request's fields, each
percent-encoded into one path segment. Every provider
block declares one, and :class:`~prefect_pollers.client.JobApiClient` interprets
it; only what is not data (e.g. APIXO's ``resultJson`` string) stays code, in the
block's ``build_result``.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from prefect_pollers.engine import (
    JobState,
    JobStatus,
    JsonReply,
    MalformedResponseError,
    ServerHints,
    StatusMap,
)
from prefect_pollers.engine.http import RateLimitReset
from prefect_pollers.providers.signatures import SignatureScheme, StandardWebhooks, as_scheme

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_FIELD_PATH = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*$")

_QUERY_NAME = re.compile(r"^[A-Za-z0-9_.~-]+$")

CallbackUrlIn = Literal["body", "query", "none"]
"""Where a submit carries its callback URL: a body field, a query parameter of the
submit URL, or nowhere (the API calls one URL per account, set in its dashboard, and
the callback body names the job)."""
EndedState = Literal["failed", "cancelled", "expired"]
"""A terminal state that is not success."""


@functools.lru_cache(maxsize=512)
def compiled(expression: str) -> ParsedResult:
    """The compiled JMESPath ``expression`` (compiled once per process).

    Raises:
        ValueError: naming the expression, when it is not valid JMESPath.
    """
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"not a valid JMESPath expression {expression!r}: {exc}") from None


def search(expression: str | None, body: Any) -> Any:
    """What ``expression`` selects in ``body`` (None for no expression or no match)."""
    return compiled(expression).search(body) if expression else None


def job_id_at(expression: str, body: Any) -> str | None:
    """The job id ``expression`` selects in ``body`` (a string or an integer), else None."""
    job_id = search(expression, body)
    if isinstance(job_id, bool) or not isinstance(job_id, (str, int)) or job_id == "":
        return None
    return str(job_id)


def fill(template: str, values: Mapping[str, Any]) -> str:
    """``template`` with each ``{name}`` replaced by ``values[name]``, percent-encoded.

    A value is one path segment: ``/``, ``?``, ``#`` or a space in it cannot change
    the URL's structure.

    Raises:
        ValueError: naming the placeholder that has no value.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values or values[name] is None:
            raise ValueError(f"URL template {template!r} needs {{{name}}}, which has no value")
        return quote(str(values[name]), safe="")

    return _PLACEHOLDER.sub(value, template)


def fill_url(template: str, values: Mapping[str, Any]) -> str | None:
    """``template`` filled from a response's fields; None when a field it names is null.

    A template that is one placeholder alone (``{results_url}``) takes its value as it
    is, a whole URL the response named; otherwise as :func:`fill`.
    """
    if any(values.get(name) is None for name in template_names(template)):
        return None
    whole = _PLACEHOLDER.fullmatch(template)
    return str(values[whole.group(1)]) if whole else fill(template, values)


def template_names(template: str) -> list[str]:
    """The names a URL template's ``{name}`` placeholders take, each once, in order."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(template)))


def scalar_fields(body: Mapping[str, Any]) -> dict[str, str]:
    """The top-level string and number fields of a JSON object, as strings."""
    return {
        name: str(value)
        for name, value in body.items()
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != ""
    }


def job_url(template: str, job_id: str, values: Mapping[str, Any]) -> str:
    """A job's URL from ``template``: ``{job_id}`` and the fields ``values`` names.

    A template that is one response field alone (``{status_url}``) takes the whole
    URL the API named, as it is (:func:`fill_url`); any other value is one
    percent-encoded path segment, the job id always.

    Raises:
        ValueError: naming the placeholder that has no value.
    """
    filled = {**values, "job_id": job_id}
    if template == "{job_id}":
        return fill(template, filled)
    url = fill_url(template, filled)
    if url is None:
        missing = [name for name in template_names(template) if filled.get(name) is None]
        raise ValueError(
            f"URL template {template!r} names {{{missing[0]}}}, which neither the submit "
            "response, the request nor the status carried"
        )
    return url


def path_field_problems(template: str, data: Mapping[str, Any]) -> list[str]:
    """Why ``data`` (a request's JSON) cannot fill ``template``: one line per field."""
    problems = []
    for name in template_names(template):
        value = data.get(name)
        if value is None:
            why = "missing"
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            why = f"a {type(value).__name__}, not a string or a number"
        elif value == "":
            why = "empty"
        else:
            continue
        problems.append(f"{name}: {why}; the submit path {template!r} needs it")
    return problems


class Endpoint(BaseModel):
    """One request of the contract: a method and a URL template (relative to base_url)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = "GET"
    path: str


def set_field(body: Any, path: str, value: Any) -> dict[str, Any]:
    """``body`` (a JSON object) with the dotted field ``path`` set to ``value``.

    Raises:
        ValueError: naming the path, when ``body`` or a step on the way is not an object.
    """
    if not isinstance(body, dict):
        raise ValueError(f"cannot set {path!r}: the submit body is not a JSON object")
    result = dict(body)
    node = result
    *parents, last = path.split(".")
    for name in parents:
        child = node.get(name)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ValueError(f"cannot set {path!r}: {name!r} in the submit body is not an object")
        node[name] = child = dict(child)
        node = child
    node[last] = value
    return result


class BasicAuth(BaseModel):
    """HTTP Basic credentials (RFC 7617), sent in the ``Authorization`` header.

    Attributes:
        username: The user name (an account id; not a secret).
        password: The password. Never logged nor shown in a repr.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str
    password: SecretStr

    def header_value(self) -> str:
        """``Basic`` and the base64 of ``username:password``."""
        pair = f"{self.username}:{self.password.get_secret_value()}"
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class CallbackSpec(BaseModel):
    """How a job API calls back when a job ends (a webhook), as data.

    Attributes:
        url_in: Where a submit carries the callback URL (:data:`CallbackUrlIn`).
        url_field: For ``body``, the dotted path of the submit-body field that
            carries it (``callback_url``, ``webhook.url``); for ``query``, the query
            parameter's name (``fal_webhook``); for ``none``, None.
        scheme: How a callback proves where it comes from
            (:data:`~prefect_pollers.providers.signatures.SignatureScheme`; a name,
            ``standard-webhooks`` or ``capability-url``, is taken too).
        job_id_field: JMESPath to the job id in a callback body.
        status_body: JMESPath that turns a callback body into the shape of a status
            response (None: it has that shape already), so that the contract's
            status paths read it; used only when a block trusts signed callbacks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url_in: CallbackUrlIn = "body"
    url_field: str | None = None
    scheme: Annotated[SignatureScheme, BeforeValidator(as_scheme)] = StandardWebhooks()
    job_id_field: str = "id"
    status_body: str | None = None

    @model_validator(mode="after")
    def _url_where_declared(self) -> CallbackSpec:
        field = self.url_field
        if self.url_in == "none":
            if field is not None:
                raise ValueError(
                    "url_field (an HttpJobApi's callback_url_field) must be empty when "
                    "the callback URL goes nowhere"
                )
        elif field is None:
            raise ValueError(f"a callback URL in the {self.url_in} needs url_field")
        elif self.url_in == "body" and not _FIELD_PATH.match(field):
            raise ValueError(f"url_field must be a dotted path of field names, got {field!r}")
        elif self.url_in == "query" and not _QUERY_NAME.match(field):
            raise ValueError(f"url_field must be a query parameter name, got {field!r}")
        return self

    @field_validator("job_id_field", "status_body")
    @classmethod
    def _valid_jmespath(cls, value: str | None) -> str | None:
        if value is not None:
            compiled(value)
        return value

    def job_id_of(self, body: Any) -> str | None:
        """The job id a callback body names, or None when it names none."""
        return job_id_at(self.job_id_field, body)


class JobApiContract(BaseModel):
    """How a job API looks on the wire.

    Attributes:
        auth_header: The header that carries the API key (none is sent for an
            empty key).
        auth_scheme: Put before the key (``Bearer``); empty to send the key alone.
        basic_auth: HTTP Basic credentials sent in ``Authorization``, if the API
            takes a username and password.
        headers: Fixed headers sent with every request (e.g. ``anthropic-version``).
        submit: The submit request; its path may name request fields (``{model}``).
        submit_body: JMESPath applied to the request's JSON to build the body
            (None: the request as it is).
        submit_exclude: Request fields kept out of the body (e.g. one in the path).
        submit_drop_nulls: Leave fields whose value is null out of the body.
        job_id_field: JMESPath to the job id in the submit response.
        context_fields: Job ref context to keep from the request, name -> JMESPath
            (what later status URLs name besides the job id).
        response_context: Top-level fields of the submit response kept in the job
            ref's context (``status_url``, ``response_url``): what the job URL
            templates name, kept so that a resumed wait has them too.
        status: The status request; its path takes ``{job_id}`` and the context.
        status_field: JMESPath to the raw status in a status (or submit) response.
        phase_field: JMESPath to a phase, where the API has phases apart from its
            status (else the raw status is the phase).
        error_code_field: JMESPath to a failed job's error code.
        error_message_field: JMESPath to a failed job's error message.
        status_map: Which raw statuses mean which normalized state.
        result: Where a succeeded job's result is fetched from (None: it is in the
            final status response); its template may also name fields of the final
            status (``{response_url}``).
        result_ended: HTTP statuses a result fetch answers for a job that ended
            otherwise although its status said it succeeded (fal answers 499 for a
            cancelled request), and the state each means.
        cancel: The cancel request, if the API documents one.
        callback: How the API calls back when a job ends, if it can.
        dedup_header: The header the API documents deduplicating submits on: a
            submit re-sent with the same value creates no second job, so one whose
            answer was lost (timeout, dropped connection, 5xx) is re-sent with the
            same idempotency key. None (no seed provider documents one): such a
            submit ends in an error saying the job may exist.
        submit_not_created_statuses: HTTP statuses the API documents answering a
            submit with without creating the job. Empty by default: a 502/503/504
            may come from a proxy whose upstream created it all the same.
        ratelimit_reset: How the API states ``X-RateLimit-Reset``: epoch seconds
            (``epoch``) or seconds from now (``delta``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    basic_auth: BasicAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    submit: Endpoint
    submit_body: str | None = None
    submit_exclude: frozenset[str] = Field(default_factory=frozenset)
    submit_drop_nulls: bool = True
    job_id_field: str = "id"
    context_fields: dict[str, str] = Field(default_factory=dict)
    response_context: frozenset[str] = Field(default_factory=frozenset)
    status: Endpoint
    status_field: str = "status"
    phase_field: str | None = None
    error_code_field: str | None = None
    error_message_field: str | None = None
    status_map: StatusMap
    result: Endpoint | None = None
    result_ended: dict[int, EndedState] = Field(default_factory=dict)
    cancel: Endpoint | None = None
    callback: CallbackSpec | None = None
    dedup_header: str | None = None
    submit_not_created_statuses: frozenset[int] = Field(default_factory=frozenset)
    ratelimit_reset: RateLimitReset = "epoch"

    @field_validator(
        "submit_body",
        "job_id_field",
        "status_field",
        "phase_field",
        "error_code_field",
        "error_message_field",
    )
    @classmethod
    def _valid_jmespath(cls, value: str | None) -> str | None:
        if value is not None:
            compiled(value)
        return value

    @field_validator("result_ended")
    @classmethod
    def _error_statuses(cls, value: dict[int, EndedState]) -> dict[int, EndedState]:
        wrong = sorted(code for code in value if not 400 <= code <= 599)
        if wrong:
            raise ValueError(f"result_ended takes HTTP error statuses (400-599), got {wrong}")
        return value

    @field_validator("context_fields")
    @classmethod
    def _valid_context_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for expression in value.values():
            compiled(expression)
        return value

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The fixed headers, and those that authenticate a request made with ``api_key``."""
        headers: dict[str, str] = dict(self.headers)
        if api_key:
            headers[self.auth_header] = (
                f"{self.auth_scheme} {api_key}" if self.auth_scheme else api_key
            )
        if self.basic_auth is not None:
            headers["Authorization"] = self.basic_auth.header_value()
        return headers

    def submit_request(
        self, request: BaseModel, *, callback_url: str | None = None
    ) -> tuple[str, str, Any]:
        """The (method, path, JSON body) that submits ``request``.

        Args:
            request: The validated request.
            callback_url: Put where the callback spec says: at the ``url_field`` of
                the body, or in the ``url_field`` query parameter of the path.
        """
        data = request.model_dump(mode="json")
        body = request.model_dump(
            mode="json",
            exclude=set(self.submit_exclude) or None,
            exclude_none=self.submit_drop_nulls,
        )
        if self.submit_body:
            body = search(self.submit_body, body)
        path = fill(self.submit.path, data)
        if callback_url is not None:
            spec = self.callback
            if spec is None or spec.url_field is None:
                raise ValueError("this API declares no per-job callback URL")
            if spec.url_in == "query":
                separator = "&" if "?" in path else "?"
                path = f"{path}{separator}{spec.url_field}={quote(callback_url, safe='')}"
            else:
                body = set_field(body, spec.url_field, callback_url)
        return self.submit.method, path, body

    def callback_status(self, provider: str, job_id: str, body: Any) -> JobStatus:
        """The normalized status a callback body reports (for trusted signed callbacks).

        Raises:
            MalformedResponseError: when it carries no status where declared.
            ValueError: when the contract declares no callbacks.
        """
        if self.callback is None:
            raise ValueError("this API declares no callbacks")
        shaped = search(self.callback.status_body, body) if self.callback.status_body else body
        reply = JsonReply(
            body=shaped if isinstance(shaped, dict) else {},
            status_code=200,
            hints=ServerHints(),
            path="(callback)",
        )
        return self.status_of(provider, job_id, reply)

    def context_of(self, request: BaseModel) -> dict[str, str]:
        """The job ref context kept from ``request``."""
        data = request.model_dump(mode="json")
        found = {name: search(path, data) for name, path in self.context_fields.items()}
        return {name: str(value) for name, value in found.items() if value is not None}

    def response_context_of(self, body: Mapping[str, Any]) -> dict[str, str]:
        """The job ref context kept from a submit response (:attr:`response_context`)."""
        fields = scalar_fields(body)
        return {name: fields[name] for name in sorted(self.response_context) if name in fields}

    def status_of(self, provider: str, job_id: str, reply: JsonReply) -> JobStatus:
        """The normalized status in a status response.

        Raises:
            MalformedResponseError: when the status is missing or not a string.
        """
        body = reply.body
        raw_status = search(self.status_field, body)
        if not isinstance(raw_status, str) or not raw_status:
            raise MalformedResponseError(
                f"{provider} status response has no string status at {self.status_field!r} "
                f"(got {type(raw_status).__name__})",
                provider=provider,
                job_id=job_id,
                path=reply.path,
                http_status=reply.status_code,
            )
        state, recognized = self.status_map.classify(raw_status)
        failed = state in (JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED)
        phase = search(self.phase_field, body)
        error_code = search(self.error_code_field, body) if failed else None
        error_message = search(self.error_message_field, body) if failed else None
        return JobStatus(
            job_id=job_id,
            state=state,
            raw_status=raw_status,
            phase=str(phase) if phase is not None else raw_status,
            error_code=str(error_code) if error_code is not None else None,
            error_message=str(error_message) if error_message is not None else None,
            payload=body,
            hints=reply.hints,
            recognized=recognized,
        )

    def job_path(
        self,
        endpoint: Endpoint,
        job_id: str,
        context: Mapping[str, str],
        status: Mapping[str, Any] | None = None,
    ) -> str:
        """``endpoint``'s URL for one job: a path relative to base_url, or an absolute URL.

        Args:
            endpoint: The status, result or cancel request.
            job_id: The job.
            context: The job ref's context (request and submit-response fields).
            status: The final status's body, whose top-level fields a result
                template may name too (the context wins where both have one).

        Raises:
            ValueError: naming the placeholder no value was found for.
        """
        return job_url(endpoint.path, job_id, {**scalar_fields(status or {}), **context})
