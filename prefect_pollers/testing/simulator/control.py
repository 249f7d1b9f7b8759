"""The ``/_sim`` control routes: health, stats, reset and live configuration."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from prefect_pollers.testing.simulator.config import SimulatorConfig
from prefect_pollers.testing.simulator.errors import Invalid
from prefect_pollers.testing.simulator.state import SimulatorState
from prefect_pollers.testing.simulator.validation import json_object


def control_routes(state: SimulatorState) -> list[Route]:
    """Routes that inspect and steer ``state``.

    ``PATCH /_sim/config`` applies a JSON merge patch (RFC 7386) to the configuration:
    objects merge, lists such as ``faults`` are replaced whole, ``null`` restores a
    default. A new ``seed`` takes effect at the next reset.
    """

    async def health(request: Request) -> JSONResponse:
        """Liveness, and the providers served."""
        return JSONResponse({"status": "ok", "providers": sorted(state.providers)})

    async def stats(request: Request) -> JSONResponse:
        """Every provider's counters."""
        return JSONResponse(state.stats())

    async def jobs(request: Request) -> JSONResponse:
        """A provider's jobs: when each was created, ended and first seen ended by a client.

        Epoch seconds; null: not yet.

        ``?data=1`` adds each job's request data (company, scenario, model, ...).
        """
        provider = state.providers.get(request.path_params["provider"])
        if provider is None:
            return JSONResponse({"error": "no such provider"}, 404)
        now = provider.now()
        with_data = request.query_params.get("data") == "1"
        return JSONResponse(
            {
                "jobs": {
                    job.id: {
                        "created_at": job.created_wall,
                        "ended_at": job.end_wall() if job.is_terminal(now) else None,
                        "observed_at": job.observed_at,
                        **({"data": job.data} if with_data else {}),
                    }
                    for job in provider.jobs.values()
                }
            }
        )

    async def reset(request: Request) -> JSONResponse:
        """Forget jobs and counters."""
        state.reset()
        return JSONResponse({"status": "reset"})

    async def get_config(request: Request) -> JSONResponse:
        """The live configuration."""
        return JSONResponse(state.config.model_dump(mode="json"))

    async def patch_config(request: Request) -> JSONResponse:
        """Merge-patch the configuration; 422 if the result is invalid."""
        try:
            patch = await json_object(request)
            merged = merge_patch(state.config.model_dump(), patch)
            state.config = SimulatorConfig.model_validate(merged)
        except Invalid as exc:
            return _validation_error(str(exc))
        except ValidationError as exc:
            return _validation_error("; ".join(_describe(error) for error in exc.errors()))
        return JSONResponse(state.config.model_dump(mode="json"))

    return [
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/stats", stats, methods=["GET"]),
        Route("/_sim/jobs/{provider}", jobs, methods=["GET"]),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/config", get_config, methods=["GET"]),
        Route("/_sim/config", patch_config, methods=["PATCH"]),
    ]


def merge_patch(target: object, patch: object) -> object:
    """Apply a JSON merge patch (RFC 7386) to ``target``."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _describe(error: ErrorDetails) -> str:
    """One pydantic error as ``field: why``."""
    field = ".".join(str(part) for part in error["loc"])
    return f"{field}: {error['msg']}"


def _validation_error(message: str) -> JSONResponse:
    """A 422 in the simulator's own error format."""
    return JSONResponse({"error": {"code": "validation_error", "message": message}}, 422)
