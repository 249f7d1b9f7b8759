"""Exona: company risk scans (seed 002), at ``/exona/api/v1``.

``POST /scans`` starts a scan (201, ``queued``) or answers a cache hit at once (200,
``completed`` with ``cached: true`` and the ``result``). ``GET /scans/{id}`` walks
``queued`` -> ``researching`` -> ``analyzing`` -> ``completed`` | ``failed`` and sends
``Retry-After`` on every response. A website whose host ends in ``.invalid`` always
fails with ``website_unreachable``.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.routing import Route

from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Provider, Reply
from prefect_pollers.testing.simulator.validation import (
    json_object,
    non_empty_str,
    optional_non_negative_int,
)
from prefect_pollers.testing.simulator.wire import iso_timestamp

RISK_LEVELS = ("low", "medium", "high", "critical")
SECONDS_PER_DAY = 86_400.0


def site_key(website: str) -> str:
    """Normalise a website for cache lookups: case-insensitive, no trailing slash."""
    return website.strip().lower().rstrip("/")


def host_of(website: str) -> str:
    """The host name of a website given with or without a scheme."""
    url = website if "://" in website else f"http://{website}"
    return (urlsplit(url).hostname or "").lower()


class Exona(Provider):
    """The Exona scan API."""

    name = "exona"
    status_field = ("status",)
    sends_retry_after = True

    def reset(self) -> None:
        """Also forget the scans remembered for cache hits."""
        super().reset()
        self._completed_by_site: dict[str, list[Job]] = {}

    def routes(self) -> list[Route]:
        """``POST /scans`` and ``GET /scans/{scan_id}``."""
        return [
            self.route("POST", "/scans", "submit", self.create_scan),
            self.route("GET", "/scans/{scan_id}", "status", self.get_scan),
        ]

    def authorized(self, request: Request) -> bool:
        """``Authorization: Bearer <key>``."""
        return request.headers.get("Authorization") == f"Bearer {self.config.api_key}"

    def poll_interval(self) -> float:
        """The Retry-After sent with every status response."""
        return self.config.exona_retry_after

    async def create_scan(self, request: Request) -> Reply:
        """Start a scan, or answer from the cache."""
        body = await json_object(request)
        name = non_empty_str(body, "company_name")
        website = non_empty_str(body, "company_website")
        max_age_days = optional_non_negative_int(body, "max_age_days")
        data: dict[str, Any] = {"company_name": name, "company_website": website}
        unreachable = host_of(website).endswith(".invalid")
        scanned_at = None if unreachable else self._cached_scan_time(website, max_age_days)
        if scanned_at is not None:
            data |= {"cached": True, "scanned_at": scanned_at}
            job = self.new_job(request, self.new_id("scan_"), (), "completed", data=data)
            return Reply(200, self.render(job, job.end), delivers=job)
        fate = self.draw_fate(doomed=unreachable)
        duration = self.draw(self.config.exona_duration)
        phases = [
            ("queued", 0.1 * duration),
            ("researching", 0.6 * duration),
            ("analyzing", 0.3 * duration),
        ]
        if unreachable:
            data["error"] = {
                "code": "website_unreachable",
                "message": f"could not reach {website}",
            }
        elif fate == "failure":
            data["error"] = {
                "code": "research_failed",
                "message": "not enough public sources to assess this company",
            }
        terminal = "failed" if fate == "failure" else "completed"
        job = self.new_job(
            request, self.new_id("scan_"), phases, terminal, finishes=fate != "never", data=data
        )
        if terminal == "completed":
            self._completed_by_site.setdefault(site_key(website), []).append(job)
        return Reply(201, self.render(job, job.created))

    async def get_scan(self, request: Request) -> Reply:
        """Report a scan's status."""
        return self.serve_status(self.find(request.path_params["scan_id"]), self.render)

    def _cached_scan_time(self, website: str, max_age_days: int | None) -> str | None:
        """When the cached scan to answer with was made, if the cache has one.

        A hit is a completed scan of the same site that ended within ``max_age_days``
        (only when given), or a random hit with probability ``cache_hit_rate``.
        """
        now = self.now()
        if max_age_days is not None:
            oldest = now - self.config.real(max_age_days * SECONDS_PER_DAY)
            ends = [
                job.end_wall()
                for job in self._completed_by_site.get(site_key(website), [])
                if oldest <= job.end <= now
            ]
            if ends:
                return iso_timestamp(max(ends))
        if self.config.cache_hit_rate and self.rng.random() < self.config.cache_hit_rate:
            return iso_timestamp(self.state.clock.time() - self.config.real(SECONDS_PER_DAY))
        return None

    def render(self, job: Job, now: float) -> dict[str, Any]:
        """The scan object as ``GET /scans/{id}`` returns it at ``now``."""
        status = job.status(now)
        scan: dict[str, Any] = {
            "id": job.id,
            "status": status,
            "company_name": job.data["company_name"],
            "company_website": job.data["company_website"],
            "created_at": iso_timestamp(job.created_wall),
        }
        if job.data.get("cached"):
            scan["cached"] = True
        if status == "completed":
            scan["result"] = self.result(job)
        elif status == "failed":
            scan["error"] = job.data["error"]
        return scan

    def result(self, job: Job) -> dict[str, Any]:
        """The scan result, deterministic from the seed and the company."""
        name = job.data["company_name"]
        website = job.data["company_website"]
        rng = random.Random(f"{self.config.seed}:{name}:{site_key(website)}")
        score = rng.randint(0, 100)
        level = RISK_LEVELS[min(score // 25, 3)]
        root = site_key(website) if "://" in website else f"https://{site_key(website)}"
        sources = [f"{root}/about", f"https://news.example.com/{host_of(website)}"]
        sources += [f"https://registry.example.org/companies/{rng.getrandbits(32):08x}"]
        return {
            "company_name": name,
            "company_website": website,
            "risk_assessment": {
                "overall_risk_level": level,
                "score": score,
                "summary": f"{name} shows {level} risk across {len(sources)} public sources.",
            },
            "sources": sources,
            "scanned_at": job.data.get("scanned_at") or iso_timestamp(job.end_wall()),
        }
