"""Twyn simulations (``GET /simulations/{simulation_id}``).

Documented: ``X-API-Key`` auth, the phases ``PROCESSING_CONFIG`` (1-2 min, poll 5 s),
``PROCESSING_SIMULATION`` (2-4 min, poll 5-10 s), ``PROCESSING_ANALYSIS`` (1-2 min,
poll 5 s), then ``COMPLETED_ANALYSIS`` or ``FAILED`` with ``error_log``; never poll
faster than 1 s, time out after 10 min at most, back off on long waits.

Not documented, our choices (overridable on the block): a simulation is created
with ``POST /simulations`` and a JSON body ``{"scenario": ..., "config": {...}}``
(``create_path``), and the create response carries the id in ``simulation_id``
(or ``id``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from prefect_pollers.engine import JobRef, PollPolicy, StatusMap
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.contract import Endpoint, JobApiContract
from prefect_pollers.providers.protocol import JobResult

CONFIG, SIMULATION, ANALYSIS = (
    "PROCESSING_CONFIG",
    "PROCESSING_SIMULATION",
    "PROCESSING_ANALYSIS",
)


class TwynSimulationRequest(BaseModel):
    """A simulation to run: a scenario and its configuration. Extra fields pass through."""

    model_config = ConfigDict(extra="allow")

    scenario: str = Field(min_length=1, description="The scenario to simulate.")
    config: dict[str, Any] = Field(default_factory=dict, description="Scenario parameters.")


class TwynSimulationResult(JobResult):
    """A completed simulation.

    Attributes:
        job_id: The simulation's id.
        results: The ``results`` object of the final status, if it has one.
        payload: The whole final status response.
    """

    results: dict[str, Any] | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    @property
    def simulation_id(self) -> str:
        """The simulation id (Twyn's name for the job id)."""
        return self.job_id


def twyn_policy() -> PollPolicy:
    """The Twyn guide's table as a phase-aware schedule, with its 10-minute deadline.

    Built from the guide's phase durations (1-2, 2-4 and 1-2 min): the first look
    is at 1 min (the earliest a configuration can end, so an early failure is seen
    early); configuration and simulation together last at least 3 min from
    submission, and the simulation 2 min from its start, so nothing useful is
    polled before those; the analysis, whose end is the result, is left alone for
    its first minute and then polled every 4.8 s (just under the guide's 5 s, so a
    completion is noticed 2.4 s after it on average). Before the analysis, a poll
    every 30 s only tells when the next phase began: that is the guide's "back off
    on long waits". It makes about a fifth of the calls of a fixed 5 s poll.
    """
    return PollPolicy(
        initial_delay=60.0,
        interval=5.0,
        max_interval=30.0,
        phase_intervals={CONFIG: 30.0, SIMULATION: 30.0, ANALYSIS: 4.8},
        phase_quiet_periods={CONFIG: 180.0, SIMULATION: 120.0, ANALYSIS: 60.0},
        deadline=600.0,
    )


TWYN_CONTRACT = JobApiContract(
    auth_header="X-API-Key",
    auth_scheme="",
    submit=Endpoint(method="POST", path="simulations"),
    job_id_field="simulation_id || id",
    status=Endpoint(path="simulations/{job_id}"),
    status_field="status",
    error_message_field="error_log",
    status_map=StatusMap(
        succeeded=frozenset({"COMPLETED_ANALYSIS"}),
        failed=frozenset({"FAILED"}),
        running=frozenset({CONFIG, SIMULATION, ANALYSIS}),
    ),
    # The guide documents no create request at all, so no idempotency header and no
    # 5xx that surely created nothing: a lost submit answer stays "may have created".
    dedup_header=None,
    submit_not_created_statuses=frozenset(),
)
"""Twyn's documented contract, with our choice for creating a simulation
(``POST /simulations``, id in ``simulation_id`` or ``id``)."""


class TwynCredentials(JobApiCredentials[TwynSimulationResult]):
    """Credentials for Twyn simulations.

    Attributes:
        api_key: The Twyn API key, sent as ``X-API-Key``.
        base_url: The API root, ``https://api.twyn.it/v1`` by default.
        create_path: Where simulations are created (not documented by Twyn).

    Example:
        ```python
        from prefect_pollers import TwynCredentials, run_job

        creds = TwynCredentials(api_key="...")
        result = await run_job(creds, {"scenario": "heatwave", "config": {"days": 7}})
        ```
    """

    _block_type_name = "Twyn Credentials"
    _block_type_slug = "twyn-credentials"
    _description = "Credentials for Twyn simulations, with a pooled HTTP client."
    _documentation_url = "https://api.twyn.it/v1"  # type: ignore[assignment]
    _code_example = """```python
from prefect_pollers import TwynCredentials

creds = TwynCredentials.load("BLOCK_NAME")
```"""

    provider_name: ClassVar[str] = "twyn"
    request_model: ClassVar[type[BaseModel]] = TwynSimulationRequest

    base_url: str = Field(default="https://api.twyn.it/v1", description="The Twyn API root URL.")
    create_path: str = Field(
        default="simulations",
        description="Path that creates a simulation (undocumented by Twyn: our choice).",
    )

    def contract(self) -> JobApiContract:
        """Twyn's contract, creating simulations at the block's ``create_path``."""
        return TWYN_CONTRACT.model_copy(
            update={"submit": Endpoint(method="POST", path=self.create_path)}
        )

    def build_result(self, ref: JobRef, body: dict[str, Any]) -> TwynSimulationResult:
        """The final status, with its ``results`` object."""
        results = body.get("results")
        return TwynSimulationResult(
            job_id=ref.job_id,
            results=results if isinstance(results, dict) else None,
            payload=body,
        )

    def default_policy(self, ref: JobRef) -> PollPolicy:
        """The guide's phase-aware schedule (:func:`twyn_policy`)."""
        return twyn_policy()
