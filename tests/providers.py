"""The one provider table of the tests: a row per registry entry, with test requests.

The registry (``prefect_pollers.testing.registry``) gives each provider's block
and sample request; this adds what tests need besides: a request that fails, one our
validation refuses and the field it names, one only the provider refuses (422), the
result type, the provider's failure code and simulator settings.
"""

from dataclasses import dataclass, field
from typing import Any

from prefect_pollers import JobApiCredentials
from prefect_pollers.providers import (
    ApixoTaskRequest,
    ApixoTaskResult,
    ExonaScanRequest,
    ExonaScanResult,
    HttpJobResult,
    ModelRouteExecutionRequest,
    ModelRouteResult,
    TwynSimulationRequest,
    TwynSimulationResult,
)
from prefect_pollers.testing.registry import PROVIDERS, ProviderEntry, provider_entry


@dataclass
class Provider:
    entry: ProviderEntry
    failing: Any  # a request the simulator fails (None: failures come from the failure rate)
    invalid: dict[str, Any] | None  # refused by our own validation
    invalid_field: str | None  # the field that refusal names
    refused: Any  # passes our validation (or bypasses it), refused by the provider with 422
    result_type: type
    fail_code: str | None
    result_route: bool  # results come from their own endpoint
    sim_config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def ok(self) -> dict[str, Any]:
        return self.entry.sample_request

    def block(self, base_url: str, key: str = "sim-key", **fields: Any) -> JobApiCredentials:
        return self.entry.block(base_url, key, **fields)


PROVIDER_TABLE = [
    Provider(
        provider_entry("exona"),
        {"company_name": "Ghost", "company_website": "https://ghost.invalid"},
        None,
        None,  # covered by test_exona_integration / test_exona_unit
        ExonaScanRequest.model_construct(company_name="", company_website="https://a.ai"),
        ExonaScanResult,
        "website_unreachable",
        False,
    ),
    Provider(
        provider_entry("twyn"),
        {"scenario": "always-fail"},
        {"scenario": "", "config": {}},
        "scenario",
        TwynSimulationRequest.model_construct(scenario="", config={}),
        TwynSimulationResult,
        None,
        False,
        {
            "twyn_config_duration": (20, 40),
            "twyn_simulation_duration": (40, 80),
            "twyn_analysis_duration": (20, 40),
        },
    ),
    Provider(
        provider_entry("apixo"),
        {"model": "nano-banana", "input": {"prompt": "please fail"}},
        {"model": "nano-banana", "input": {"prompt": "  "}},
        "prompt",
        ApixoTaskRequest.model_construct(
            model="nano-banana", input={"prompt": ""}, request_type="async", callback_url=None
        ),
        ApixoTaskResult,
        "CONTENT_POLICY",
        False,
    ),
    Provider(
        provider_entry("modelroute"),
        None,
        {"model": "", "input": {}},
        "model",
        ModelRouteExecutionRequest.model_construct(model="", input={}),
        ModelRouteResult,
        None,
        True,
    ),
    Provider(
        provider_entry("generic"),
        {"kind": "fail-render", "params": {}},
        None,
        None,  # a declared API accepts any JSON: only the provider refuses
        {"kind": "", "params": {}},
        HttpJobResult,
        None,
        True,
    ),
]
assert [p.name for p in PROVIDER_TABLE] == [e.name for e in PROVIDERS], "one row per provider"
BY_NAME = {p.name: p for p in PROVIDER_TABLE}
