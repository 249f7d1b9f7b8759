"""Twyn: simulations (seeds 000/001), at ``/twyn/v1``.

The guide documents only ``GET /simulations/{simulation_id}``; creation is our
choice: ``POST /simulations`` with ``{"scenario": str, "config": object?}``. A run
walks ``PROCESSING_CONFIG`` -> ``PROCESSING_SIMULATION`` -> ``PROCESSING_ANALYSIS``
-> ``COMPLETED_ANALYSIS`` (with ``results``) or ``FAILED`` (with ``error_log``, at a
random phase). No Retry-After is sent; polls less than a simulated second apart get
429 ("don't poll faster than 1 second"). A scenario containing "fail" always fails.
"""

from __future__ import annotations

import json
import random
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Provider, Reply
from prefect_pollers.testing.simulator.validation import an_object, json_object, non_empty_str

COMPLETED = "COMPLETED_ANALYSIS"
FAILED = "FAILED"


class Twyn(Provider):
    """The Twyn simulation API."""

    name = "twyn"
    status_field = ("status",)

    def routes(self) -> list[Route]:
        """``POST /simulations`` and ``GET /simulations/{simulation_id}``."""
        return [
            self.route("POST", "/simulations", "submit", self.create_simulation),
            self.route("GET", "/simulations/{simulation_id}", "status", self.get_simulation),
        ]

    def authorized(self, request: Request) -> bool:
        """``X-API-Key: <key>``."""
        return request.headers.get("X-API-Key") == self.config.api_key

    def poll_interval(self) -> float:
        """The documented floor between polls."""
        return self.config.twyn_min_poll_interval

    async def create_simulation(self, request: Request) -> Reply:
        """Start a simulation run."""
        body = await json_object(request)
        scenario = non_empty_str(body, "scenario")
        config = an_object(body, "config", required=False)
        phases = [
            ("PROCESSING_CONFIG", self.draw(self.config.twyn_config_duration)),
            ("PROCESSING_SIMULATION", self.draw(self.config.twyn_simulation_duration)),
            ("PROCESSING_ANALYSIS", self.draw(self.config.twyn_analysis_duration)),
        ]
        fate = self.draw_fate(doomed="fail" in scenario.lower())
        ends_after = None
        data: dict[str, Any] = {"scenario": scenario, "config": config}
        if fate == "failure":
            phase = self.rng.randrange(len(phases))
            name, duration = phases[phase]
            ends_after = sum(d for _, d in phases[:phase]) + duration * self.rng.uniform(0.1, 0.9)
            data["error_log"] = (
                f"{name}: worker exited with code 137 while running scenario {scenario!r}"
            )
        job = self.new_job(
            request,
            self.new_id("sim_"),
            phases,
            FAILED if fate == "failure" else COMPLETED,
            finishes=fate != "never",
            ends_after=ends_after,
            data=data,
        )
        body = {"simulation_id": job.id, "status": job.status(job.created), "scenario": scenario}
        return Reply(201, body)

    async def get_simulation(self, request: Request) -> Reply:
        """Report a simulation's status."""
        job = self.find(request.path_params["simulation_id"])
        return self.serve_status(job, self.render)

    def render(self, job: Job, now: float) -> dict[str, Any]:
        """The simulation object at ``now``."""
        status = job.status(now)
        progress = job.progress(now) if job.is_terminal(now) else min(job.progress(now), 0.99)
        body: dict[str, Any] = {
            "simulation_id": job.id,
            "status": status,
            "scenario": job.data["scenario"],
            "progress": round(progress, 3),
        }
        if status == COMPLETED:
            body["results"] = self.results(job)
        elif status == FAILED:
            body["error_log"] = job.data["error_log"]
        return body

    def results(self, job: Job) -> dict[str, Any]:
        """Outcome figures, deterministic from the seed, the scenario and its config."""
        scenario, config = job.data["scenario"], job.data["config"]
        rng = random.Random(f"{self.config.seed}:{scenario}:{json.dumps(config, sort_keys=True)}")
        iterations = config.get("iterations")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            iterations = 1000
        mean = rng.uniform(0.0, 100.0)
        std = rng.uniform(1.0, 20.0)
        return {
            "iterations": iterations,
            "mean_outcome": round(mean, 3),
            "std_outcome": round(std, 3),
            "p95_outcome": round(mean + 1.645 * std, 3),
            "success_probability": round(rng.uniform(0.0, 1.0), 3),
        }
