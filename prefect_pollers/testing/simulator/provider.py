"""What every simulated provider shares: request pipeline, job bookkeeping, polling rules.

A request goes through the same steps whatever the provider: fault injection, the
provider's authentication, its handler (which may refuse with a :class:`Refusal`),
data-shape faults on the way out, and the bookkeeping of what the client was told.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from prefect_pollers.testing.simulator.clock import SimulatorClock
from prefect_pollers.testing.simulator.config import (
    FaultKind,
    FaultRule,
    RouteKind,
    SimulatorConfig,
)
from prefect_pollers.testing.simulator.errors import Refusal
from prefect_pollers.testing.simulator.faults import (
    HTML_ERROR_PAGE,
    REPLACING,
    RESHAPING,
    TRUNCATED_JSON,
    FaultInjector,
    ResetResponse,
    reshape,
)
from prefect_pollers.testing.simulator.jobs import NEVER, Job
from prefect_pollers.testing.simulator.signing import SigningKeys
from prefect_pollers.testing.simulator.stats import ProviderStats
from prefect_pollers.testing.simulator.wire import format_seconds

Fate = Literal["success", "failure", "never"]


@dataclass
class Reply:
    """A provider's answer before it is turned into an HTTP response.

    Attributes:
        status: HTTP status code.
        body: JSON body.
        headers: Extra response headers.
        delivers: The job whose terminal status this reply hands to the client.
        response: A ready response sent as it is instead of ``body`` (raw file
            bytes, a streamed JSONL file).
    """

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delivers: Job | None = None
    response: Response | None = None


Handler = Callable[[Request], Awaitable[Reply]]


class SharedState(Protocol):
    """What a provider reads of the simulator it belongs to (a ``SimulatorState``)."""

    config: SimulatorConfig
    clock: SimulatorClock
    faults: FaultInjector
    signing: SigningKeys


class Provider(ABC):
    """Base class of the simulated providers.

    Subclasses set ``name`` (the provider's name in the registry, which says where
    its routes are served: ``prefix``) and ``status_field`` (the path of the status
    value inside a status response), and implement their routes and authentication.
    """

    name: ClassVar[str]
    status_field: ClassVar[tuple[str, ...]]
    sends_retry_after: ClassVar[bool] = False

    def __init__(self, state: SharedState, prefix: str) -> None:
        """Attach to the shared simulator state, serve under ``prefix``, with no jobs."""
        self.state = state
        self.prefix = prefix
        self.reset()

    def reset(self) -> None:
        """Forget every job and counter, and reseed the random draws."""
        self.jobs: dict[str, Job] = {}
        self.stats = ProviderStats()
        self.rng = random.Random(f"{self.config.seed}:{self.name}")
        self._seq = itertools.count()

    @property
    def config(self) -> SimulatorConfig:
        """The live configuration (it may be replaced while running)."""
        return self.state.config

    def now(self) -> float:
        """Current real monotonic time."""
        return self.state.clock.monotonic()

    @abstractmethod
    def routes(self) -> list[Route]:
        """The provider's HTTP routes, under its prefix."""

    @abstractmethod
    def authorized(self, request: Request) -> bool:
        """Whether the request carries the configured API key the provider's way."""

    def poll_interval(self) -> float | None:
        """Simulated seconds a client must leave between status polls (None: no rule)."""
        return None

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        """The provider's JSON error body."""
        return {"error": {"code": code, "message": message}}

    def extra_stats(self) -> dict[str, Any]:
        """Provider-specific counters added to the common ones."""
        return {}

    async def aclose(self) -> None:  # noqa: B027 - an optional hook: doing nothing is the default
        """Stop any background work (nothing by default)."""

    def snapshot(self) -> dict[str, Any]:
        """This provider's entry in ``GET /_sim/stats``."""
        return self.stats.snapshot(self.now()) | self.extra_stats()

    # -- request pipeline -------------------------------------------------------

    def route(self, method: str, path: str, kind: RouteKind, handler: Handler) -> Route:
        """Expose ``handler`` at ``prefix + path`` through the common pipeline."""

        async def endpoint(request: Request) -> Response:
            """Serve the request and count its response status."""
            response = await self.serve(request, kind, handler)
            self.stats.responses[response.status_code] += 1
            return response

        return Route(self.prefix + path, endpoint, methods=[method], name=f"{self.name}.{kind}")

    async def serve(self, request: Request, kind: RouteKind, handler: Handler) -> Response:
        """Run one request: faults, authentication, the handler, then bookkeeping."""
        rule = self.state.faults.pick(self.config.faults, self.name, kind)
        if rule is not None and rule.kind in REPLACING:
            self.stats.record_fault(rule.kind, kind)
            return self.fault_response(rule)
        if rule is not None and rule.kind == "slow":
            self.stats.record_fault(rule.kind, kind)
            await asyncio.sleep(rule.delay_s)
        try:
            if not self.authorized(request):
                raise Refusal(401, "unauthorized", "missing or invalid API key")
            reply = await handler(request)
        except Refusal as refusal:
            reply = self.refusal_reply(refusal)
        if rule is not None and rule.kind == "reset_after_create":
            self.stats.record_fault(rule.kind, kind)
            return ResetResponse()
        if rule is not None and rule.kind in RESHAPING and reply.status == 200:
            self.reshape_status(reply, rule.kind)
        if reply.delivers is not None:
            self.stats.record_observed(reply.delivers, self.now())
        if reply.response is not None:
            return reply.response
        return JSONResponse(reply.body, reply.status, reply.headers)

    def reshape_status(self, reply: Reply, fault: FaultKind) -> None:
        """Apply a data-shape fault to a status reply, which then delivers nothing."""
        if reshape(reply.body, self.status_field, fault):
            self.stats.record_fault(fault, "status")
            reply.delivers = None

    def refusal_reply(self, refusal: Refusal) -> Reply:
        """Turn a refusal into the provider's error reply."""
        headers = {}
        if refusal.retry_after is not None:
            headers["Retry-After"] = format_seconds(refusal.retry_after)
        body = self.error_body(refusal.status, refusal.code, refusal.message)
        return Reply(refusal.status, body, headers)

    def fault_response(self, rule: FaultRule) -> Response:
        """The broken response a replacing fault sends instead of the provider's."""
        if rule.kind == "reset":
            return ResetResponse()
        if rule.kind == "html":
            return HTMLResponse(HTML_ERROR_PAGE, status_code=502)
        if rule.kind == "empty":
            return Response(b"", status_code=200, media_type="application/json")
        if rule.kind == "malformed_json":
            return Response(TRUNCATED_JSON, status_code=200, media_type="application/json")
        wait: float | None
        if rule.kind == "burst_429":
            wait = self.config.real(1.0 if rule.retry_after is None else rule.retry_after)
            refusal = Refusal(429, "rate_limited", "too many requests", retry_after=wait)
        else:
            wait = None if rule.retry_after is None else self.config.real(rule.retry_after)
            status = int(rule.kind.removeprefix("http_"))
            refusal = Refusal(status, "server_error", f"simulated HTTP {status}", retry_after=wait)
        reply = self.refusal_reply(refusal)
        return JSONResponse(reply.body, reply.status, reply.headers)

    # -- jobs -------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        """A fresh job id: ``prefix`` followed by 16 random hex digits."""
        return f"{prefix}{self.rng.getrandbits(64):016x}"

    def draw(self, bounds: tuple[float, float]) -> float:
        """A simulated duration drawn uniformly from ``bounds``."""
        return self.rng.uniform(*bounds)

    def draw_fate(self, *, doomed: bool = False) -> Fate:
        """Decide at submit time how a job ends; ``doomed`` jobs always fail."""
        if doomed:
            return "failure"
        if self.rng.random() < self.config.never_finish_rate:
            return "never"
        if self.rng.random() < self.config.failure_rate:
            return "failure"
        return "success"

    def new_job(
        self,
        request: Request,
        job_id: str,
        phases: Sequence[tuple[str, float]],
        terminal: str,
        *,
        finishes: bool = True,
        ends_after: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> Job:
        """Create, store and count a job.

        Args:
            request: The submit request (its ``Idempotency-Key`` header is counted).
            job_id: The job's id.
            phases: ``(status, simulated duration)`` of each non-terminal phase; empty
                for a job that is terminal from the start.
            terminal: The terminal status the job reaches.
            finishes: False for a job that stays in its last phase forever.
            ends_after: Simulated seconds until the job turns terminal, if not at the
                end of its last phase.
            data: Provider-specific data kept with the job.
        """
        now = self.now()
        ends_at = now
        timeline = []
        for status, duration in phases:
            ends_at += self.config.real(duration)
            timeline.append((status, ends_at))
        if ends_after is not None:
            ends_at = now + self.config.real(ends_after)
        job = Job(
            id=job_id,
            seq=next(self._seq),
            created=now,
            created_wall=self.state.clock.time(),
            phases=tuple(timeline),
            end=ends_at if finishes else NEVER,
            terminal=terminal,
            data=data or {},
        )
        self.jobs[job_id] = job
        self.stats.record_submit(job, now, request.headers.get("Idempotency-Key"))
        return job

    def find(self, job_id: str) -> Job:
        """The job with ``job_id``, or a 404 refusal.

        A job younger than ``not_visible_for_s`` is not found yet either, as an
        eventually consistent API answers for a moment after creating a job.
        """
        job = self.jobs.get(job_id)
        hidden = job is not None and self.now() - job.created < self.config.real(
            self.config.not_visible_for_s
        )
        if job is None or hidden:
            if hidden:
                self.stats.not_visible_404 += 1
            raise Refusal(404, "not_found", f"no job with id {job_id!r}")
        return job

    def serve_status(self, job: Job, render: Callable[[Job, float], dict[str, Any]]) -> Reply:
        """Answer a status poll for ``job``, enforcing the provider's polling rule.

        After a non-terminal status response, a poll arriving sooner than the poll
        interval is refused with 429 and a Retry-After of the time left, and is not
        counted as a status call. An interval sent as Retry-After is a hint, so
        ``early_poll_tolerance`` of it is forgiven; a documented floor (Twyn's 1 s)
        is strict.
        """
        now = self.now()
        if now < job.poll_open_at:
            raise Refusal(
                429,
                "polling_too_fast",
                "polled before the previous Retry-After elapsed",
                retry_after=job.next_poll_at - now,
            )
        self.stats.record_status_call(job)
        terminal = job.is_terminal(now)
        headers = {}
        interval = self.poll_interval()
        if interval is not None:
            wait = self.config.real(interval)
            if self.sends_retry_after:
                headers["Retry-After"] = format_seconds(wait)
            if not terminal:
                job.next_poll_at = now + wait
                slack = self.config.early_poll_tolerance if self.sends_retry_after else 0.0
                job.poll_open_at = now + wait * (1.0 - slack)
        return Reply(200, render(job, now), headers, delivers=job if terminal else None)

    def cancel(self, job: Job, status: str) -> None:
        """End an in-flight job now with ``status`` and count the cancellation."""
        now = self.now()
        self.stats.cancels += 1
        if not job.is_terminal(now):
            job.end_now(now, status)
            self.stats.ledger.ended_early(job)
