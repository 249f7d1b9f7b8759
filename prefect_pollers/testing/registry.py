"""The one list of providers: what the simulator, demo, deployments, benchmarks and tests read.

Each :class:`ProviderEntry` names a provider's block, where the simulator serves its
API, a valid sample request, and its example flow. Adding a provider means its
module under ``providers/``, its simulator module, and one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect_pollers.engine import PollPolicy
from prefect_pollers.providers.anthropic_batch import AnthropicBatchCredentials
from prefect_pollers.providers.apixo import ApixoCredentials
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.catalog import preset
from prefect_pollers.providers.exona import ExonaCredentials
from prefect_pollers.providers.http_job_api import HttpJobApi
from prefect_pollers.providers.modelroute import ModelRouteCredentials
from prefect_pollers.providers.openai_batch import OpenAIBatchCredentials
from prefect_pollers.providers.twyn import TwynCredentials

SIMULATOR_API_KEY = "sim-key"
"""The API key the simulator accepts by default."""

DEMO_TIME_SCALE = 0.05
"""The demo's simulated time: a 30-120 s scan takes 1.5-6 s (``make demo``, ``make simulator``,
``make blocks``)."""

GENERIC_SIMULATOR_API: dict[str, Any] = {
    "api_name": "generic",
    "auth_header": "X-Auth-Token",
    "auth_scheme": "",
    "submit_path": "tasks",
    "submit_body": "{task: {kind: kind, params: params}}",
    "job_id_field": "task.uid",
    "status_url": "tasks/{job_id}",
    "status_field": "task.state.name",
    "succeeded": ["DONE"],
    "failed": ["ERROR"],
    "cancelled": ["ABORTED"],
    "expired": ["TIMED_OUT"],
    "pending": ["QUEUED"],
    "running": ["WORKING"],
    "error_code_field": "task.state.reason.code",
    "error_message_field": "task.state.reason.text",
    "result_url": "tasks/{job_id}/output",
    "result_field": "output",
    "cancel_url": "tasks/{job_id}/abort",
    "policy": PollPolicy(interval=5.0, deadline=600.0),
}
"""The ``HttpJobApi`` declaration of the simulator's generic job API: an API
prefect-pollers has no code for."""


@dataclass(frozen=True)
class ProviderEntry:
    """One provider.

    Attributes:
        name: The provider's short name; also the demo block's name.
        block_type: Its credentials block.
        simulator_prefix: Where the simulator serves its API (its base URL's path).
        sample_request: A valid request (demo, docs, tests).
        example_flow: The example flow, as ``module:function``.
        block_fields: Fields a block for the simulator needs besides its base URL
            and key (the generic API's whole declaration; a preset's parameters).
        preset: The catalog preset the block is (``fal``), if any: ``block_fields``
            then holds its parameters.
    """

    name: str
    block_type: type[JobApiCredentials[Any]]
    simulator_prefix: str
    sample_request: dict[str, Any]
    example_flow: str
    block_fields: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None

    def block(self, base_url: str, api_key: str, **fields: Any) -> JobApiCredentials[Any]:
        """A block of this provider at ``base_url`` (``fields`` override any other field)."""
        values = {**self.block_fields, "base_url": base_url, "api_key": api_key, **fields}
        if self.preset is not None:
            return preset(self.preset, **values)
        return self.block_type(**values)

    def simulator_block(
        self,
        simulator_url: str,
        *,
        api_key: str = SIMULATOR_API_KEY,
        time_scale: float = DEMO_TIME_SCALE,
        **fields: Any,
    ) -> JobApiCredentials[Any]:
        """A block for this provider on a simulator, its policies scaled to its time."""
        return self.block(
            simulator_url.rstrip("/") + self.simulator_prefix,
            api_key,
            **{"policy_scale": time_scale, **fields},
        )


PROVIDERS: tuple[ProviderEntry, ...] = (
    ProviderEntry(
        name="exona",
        block_type=ExonaCredentials,
        simulator_prefix="/exona/api/v1",
        sample_request={"company_name": "Acme AI Ltd", "company_website": "https://acme.ai"},
        example_flow="flows.batch_scans:batch_scans",
    ),
    ProviderEntry(
        name="twyn",
        block_type=TwynCredentials,
        simulator_prefix="/twyn/v1",
        sample_request={"scenario": "heatwave", "config": {"days": 3}},
        example_flow="flows.scenario_sweep:scenario_sweep",
    ),
    ProviderEntry(
        name="apixo",
        block_type=ApixoCredentials,
        simulator_prefix="/apixo/api/v1",
        sample_request={"model": "nano-banana", "input": {"prompt": "a fox"}},
        example_flow="flows.generation_grid:generation_grid",
    ),
    ProviderEntry(
        name="modelroute",
        block_type=ModelRouteCredentials,
        simulator_prefix="/modelroute/v1",
        sample_request={"model": "image-gen", "input": {"prompt": "a fox"}},
        example_flow="flows.execution_batch:execution_batch",
    ),
    ProviderEntry(
        name="generic",
        block_type=HttpJobApi,
        simulator_prefix="/generic/v2",
        sample_request={"kind": "render", "params": {"frames": 3}},
        example_flow="flows.generic_jobs:generic_jobs",
        block_fields=GENERIC_SIMULATOR_API,
    ),
)

BATCH_PROVIDERS: tuple[ProviderEntry, ...] = (
    ProviderEntry(
        name="openai-batch",
        block_type=OpenAIBatchCredentials,
        simulator_prefix="/openai/v1",
        sample_request={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "My invoice is wrong"}],
        },
        example_flow="flows.ticket_triage:ticket_triage",
    ),
    ProviderEntry(
        name="anthropic-batch",
        block_type=AnthropicBatchCredentials,
        simulator_prefix="/anthropic",
        sample_request={
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "My invoice is wrong"}],
        },
        example_flow="flows.ticket_triage:ticket_triage",
    ),
)
"""The provider-batch APIs: many requests per job (``run_provider_batch``, not ``run_job``)."""

CATALOG_PROVIDERS: tuple[ProviderEntry, ...] = (
    ProviderEntry(
        name="fal",
        block_type=HttpJobApi,
        simulator_prefix="/fal",
        sample_request={"prompt": "a fox"},
        example_flow="flows.generic_jobs:generic_jobs",
        block_fields={"app": "fal-ai/flux/dev"},
        preset="fal",
    ),
)
"""Real APIs of the catalog the simulator serves too, their blocks the catalog's presets.

Not in :data:`PROVIDERS`: no demo block, deployment or benchmark runs them."""

_BY_NAME = {entry.name: entry for entry in (*PROVIDERS, *BATCH_PROVIDERS, *CATALOG_PROVIDERS)}


def provider_entry(name: str) -> ProviderEntry:
    """The registry entry of provider ``name``.

    Raises:
        KeyError: naming the known providers, when there is no such provider.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no provider {name!r}; known: {', '.join(_BY_NAME)}") from None


def varied_request(provider: str, index: int) -> dict[str, Any]:
    """The ``index``-th of many different valid requests to ``provider`` (soak, tests)."""
    if provider == "exona":
        return {"company_name": f"Company {index}", "company_website": f"https://c{index}.example"}
    if provider == "twyn":
        return {"scenario": f"scenario-{index}", "config": {"i": index}}
    if provider == "apixo":
        model = ("nano-banana", "flux-2", "suno")[index % 3]
        return {"model": model, "input": {"prompt": f"p{index}"}}
    if provider == "modelroute":
        return {"model": "image-gen", "input": {"prompt": f"p{index}"}}
    sample = provider_entry(provider).sample_request
    return {**sample, "params": {"i": index}} if "params" in sample else dict(sample)
