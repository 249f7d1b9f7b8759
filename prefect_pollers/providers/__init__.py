"""One module per provider: its credentials block, request and result models, status map."""

from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.exona import (
    ExonaCredentials,
    ExonaRiskAssessment,
    ExonaScanRequest,
    ExonaScanResult,
    exona_policy,
)

__all__ = [
    "ExonaCredentials",
    "ExonaRiskAssessment",
    "ExonaScanRequest",
    "ExonaScanResult",
    "JobApiCredentials",
    "exona_policy",
]
