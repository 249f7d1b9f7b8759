"""One module per provider: its credentials block, request and result models, status map."""

from prefect_pollers.providers.apixo import (
    ApixoCredentials,
    ApixoTaskRequest,
    ApixoTaskResult,
    apixo_policy,
)
from prefect_pollers.providers.base import JobApiCredentials
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
from prefect_pollers.providers.twyn import (
    TwynCredentials,
    TwynSimulationRequest,
    TwynSimulationResult,
    twyn_policy,
)

__all__ = [
    "ApixoCredentials",
    "ApixoTaskRequest",
    "ApixoTaskResult",
    "ExonaCredentials",
    "ExonaRiskAssessment",
    "ExonaScanRequest",
    "ExonaScanResult",
    "HttpJobApi",
    "HttpJobRequest",
    "HttpJobResult",
    "JobApiCredentials",
    "ModelRouteCredentials",
    "ModelRouteExecutionRequest",
    "ModelRouteResult",
    "ModelRouteUsage",
    "TwynCredentials",
    "TwynSimulationRequest",
    "TwynSimulationResult",
    "apixo_policy",
    "exona_policy",
    "modelroute_policy",
    "twyn_policy",
]
