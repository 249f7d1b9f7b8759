"""Exona company risk scans (``POST /scans``, ``GET /scans/{id}``).

Documented: Bearer auth, the scan request fields, ``completed`` / ``failed`` as the
terminal statuses, a cache hit answered ``completed`` at once, ``Retry-After`` on
status responses (10 s by default), 429 with ``Retry-After`` (60 s by default),
2^n s backoff on other errors and giving up after 3 in a row, scans of 30-120 s,
and poll intervals of 5 s (interactive), 15 s (batch) and 30 s (100+ companies).

Not documented, our choices: the non-terminal status values (we know ``queued``
and ``pending`` as pending, ``running``, ``processing``, ``researching`` and
``analyzing`` as running; extend ``running_statuses``; any other value counts as
running and is logged once).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from prefect_pollers.engine import JobRef, PollPolicy, StatusMap
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.contract import Endpoint, JobApiContract
from prefect_pollers.providers.protocol import JobResult

EXONA_DOCS = "https://platform.exonalab.com"


class ExonaScanRequest(BaseModel):
    """One company to scan. Extra fields are passed to Exona as they are."""

    model_config = ConfigDict(extra="allow")

    company_name: str = Field(min_length=1, description="The company's legal or trading name.")
    company_website: str = Field(min_length=1, description="The company's website URL.")
    max_age_days: int | None = Field(
        default=None,
        ge=0,
        strict=True,
        description="Reuse a cached scan no older than this many days.",
    )


class ExonaRiskAssessment(BaseModel):
    """The risk assessment of a scan (other fields are kept as they come)."""

    model_config = ConfigDict(extra="allow")

    overall_risk_level: str | None = None


class ExonaScanResult(JobResult):
    """A completed scan: the whole ``result`` payload, with typed access to the risk level.

    Attributes:
        job_id: The scan's id.
        cached: Whether Exona answered from its cache (no scan was run).
        risk_assessment: The parsed ``result.risk_assessment``.
        payload: The whole ``result`` object as Exona returned it.
    """

    cached: bool = False
    risk_assessment: ExonaRiskAssessment | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    @property
    def scan_id(self) -> str:
        """The scan id (Exona's name for the job id)."""
        return self.job_id

    @property
    def overall_risk_level(self) -> str | None:
        """``result.risk_assessment.overall_risk_level``."""
        return self.risk_assessment.overall_risk_level if self.risk_assessment else None


def exona_policy(batch_size: int = 1) -> PollPolicy:
    """The Exona guide's schedule: 5 s interactive, 15 s for a batch, 30 s for 100+.

    The first poll comes 30 s after submission (scans take 30-120 s, says the
    guide: an earlier poll can only say "still running"). ``Retry-After`` from the
    server is always a floor. The deadline is the guide's 300 s; 429 without
    ``Retry-After`` waits 60 s; request errors back off 2 s, 4 s and the third in a
    row gives up, as the guide does.
    """
    interval = 5.0 if batch_size <= 1 else 15.0 if batch_size < 100 else 30.0
    return PollPolicy(
        initial_delay=30.0,
        interval=interval,
        max_interval=max(interval, 30.0),
        deadline=300.0,
        error_budget=2,
        error_backoff=2.0,
        rate_limit_default=60.0,
    )


EXONA_CONTRACT = JobApiContract(
    submit=Endpoint(method="POST", path="scans"),
    job_id_field="id",
    status=Endpoint(path="scans/{job_id}"),
    status_field="status",
    error_code_field="error.code",
    error_message_field="error.message",
    status_map=StatusMap(
        succeeded=frozenset({"completed"}),
        failed=frozenset({"failed"}),
        pending=frozenset({"queued", "pending"}),
    ),
    # The guide's POST /scans sends no idempotency header and says nothing of
    # duplicates (its max_age_days cache answers a finished scan again, not a running
    # one): a lost submit answer stays "may have created".
    dedup_header=None,
    submit_not_created_statuses=frozenset(),
)
"""Exona's documented contract (a submit response that is already ``completed`` is a
cache hit: the wait then makes no poll)."""


class ExonaCredentials(JobApiCredentials[ExonaScanResult]):
    """Credentials for Exona company risk scans.

    Attributes:
        api_key: The Exona API key (``exo_live_...``).
        base_url: The API root, ``https://platform.exonalab.com/api/v1`` by default.
        running_statuses: Non-terminal statuses recognized without a warning.

    Example:
        ```python
        from prefect_pollers import ExonaCredentials, run_job

        creds = ExonaCredentials(api_key="exo_live_...")
        result = await run_job(creds, {"company_name": "Acme AI Ltd",
                                       "company_website": "https://acme.ai"})
        print(result.overall_risk_level)
        ```
    """

    _block_type_name = "Exona Credentials"
    _block_type_slug = "exona-credentials"
    _description = "Credentials for Exona company risk scans, with a pooled HTTP client."
    _documentation_url = EXONA_DOCS  # type: ignore[assignment]
    _code_example = """```python
from prefect_pollers import ExonaCredentials

creds = ExonaCredentials.load("BLOCK_NAME")
```"""

    provider_name: ClassVar[str] = "exona"
    request_model: ClassVar[type[BaseModel]] = ExonaScanRequest

    base_url: str = Field(
        default="https://platform.exonalab.com/api/v1", description="The Exona API root URL."
    )
    running_statuses: list[str] = Field(
        default=["running", "processing", "researching", "analyzing"],
        description="Non-terminal statuses known without a warning (Exona does not list them).",
    )

    def contract(self) -> JobApiContract:
        """Exona's contract, knowing the block's ``running_statuses``."""
        status_map = EXONA_CONTRACT.status_map.model_copy(
            update={"running": frozenset(self.running_statuses)}
        )
        return EXONA_CONTRACT.model_copy(update={"status_map": status_map})

    def build_result(self, ref: JobRef, body: dict[str, Any]) -> ExonaScanResult:
        """The scan's ``result`` object, typed."""
        result = body.get("result")
        if not isinstance(result, dict):
            raise ValueError("exona reported the scan completed without a result object")
        risk = result.get("risk_assessment")
        return ExonaScanResult(
            job_id=ref.job_id,
            cached=bool(body.get("cached", False)),
            risk_assessment=ExonaRiskAssessment.model_validate(risk)
            if isinstance(risk, dict)
            else None,
            payload=result,
        )

    def default_policy(self, ref: JobRef) -> PollPolicy:
        """The guide's interactive schedule (:func:`exona_policy`)."""
        return exona_policy()
