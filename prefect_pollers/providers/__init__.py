"""The providers: one module each (block, models, contract, preset), and what they share."""

from prefect_pollers.providers.anthropic_batch import (
    AnthropicBatchCredentials,
    AnthropicBatchResult,
    AnthropicMessageRequest,
)
from prefect_pollers.providers.apixo import (
    ApixoCredentials,
    ApixoTaskRequest,
    ApixoTaskResult,
    apixo_policy,
)
from prefect_pollers.providers.base import JobApiCredentials, load_credentials
from prefect_pollers.providers.contract import Endpoint, JobApiContract
from prefect_pollers.providers.exona import (
    ExonaCredentials,
    ExonaRiskAssessment,
    ExonaScanRequest,
    ExonaScanResult,
    exona_policy,
)
from prefect_pollers.providers.http_job_api import HttpJobApi, HttpJobRequest, HttpJobResult
from prefect_pollers.providers.modelroute import (
    ModelRouteCredentials,
    ModelRouteExecutionRequest,
    ModelRouteResult,
    ModelRouteUsage,
    modelroute_policy,
)
from prefect_pollers.providers.openai_batch import (
    OpenAIBatchCredentials,
    OpenAIBatchResult,
    OpenAIRequest,
)
from prefect_pollers.providers.protocol import JobResult
from prefect_pollers.providers.provider_batch import (
    ProviderBatchCredentials,
    RequestResult,
    provider_batch_policy,
)
from prefect_pollers.providers.twyn import (
    TwynCredentials,
    TwynSimulationRequest,
    TwynSimulationResult,
    twyn_policy,
)

__all__ = [
    "AnthropicBatchCredentials",
    "AnthropicBatchResult",
    "AnthropicMessageRequest",
    "ApixoCredentials",
    "ApixoTaskRequest",
    "ApixoTaskResult",
    "Endpoint",
    "ExonaCredentials",
    "ExonaRiskAssessment",
    "ExonaScanRequest",
    "ExonaScanResult",
    "HttpJobApi",
    "HttpJobRequest",
    "HttpJobResult",
    "JobApiContract",
    "JobApiCredentials",
    "JobResult",
    "ModelRouteCredentials",
    "ModelRouteExecutionRequest",
    "ModelRouteResult",
    "ModelRouteUsage",
    "OpenAIBatchCredentials",
    "OpenAIBatchResult",
    "OpenAIRequest",
    "ProviderBatchCredentials",
    "RequestResult",
    "TwynCredentials",
    "TwynSimulationRequest",
    "TwynSimulationResult",
    "apixo_policy",
    "exona_policy",
    "load_credentials",
    "modelroute_policy",
    "provider_batch_policy",
    "twyn_policy",
]
