"""Fault injection: which rule fires on a request, and the broken responses it causes."""

from __future__ import annotations

import random
from collections.abc import Sequence

import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from prefect_pollers.testing.simulator.config import FaultKind, FaultRule, RouteKind

REPLACING: frozenset[FaultKind] = frozenset(
    {"http_500", "http_502", "http_503", "reset", "burst_429", "malformed_json", "html", "empty"}
)
"""Kinds answered instead of the provider: the request is never handled (no job is made)."""

RESHAPING: frozenset[FaultKind] = frozenset({"missing_field", "mistyped_field", "unknown_status"})
"""Kinds that rewrite the status field of a status response the provider produced."""

UNKNOWN_STATUS = "REBALANCING"
"""A status value no provider documents."""


class FaultInjector:
    """Decides, request by request, which configured fault rule fires."""

    def __init__(self, seed: int) -> None:
        """Seed the random draws so a run is reproducible."""
        self._rng = random.Random(f"{seed}:faults")
        self._matches: dict[tuple[int, FaultRule], int] = {}

    def pick(self, rules: Sequence[FaultRule], provider: str, route: RouteKind) -> FaultRule | None:
        """Count this request against every matching rule and return the first that fires."""
        chosen: FaultRule | None = None
        for index, rule in enumerate(rules):
            if not _matches(rule, provider, route):
                continue
            key = (index, rule)
            seen = self._matches[key] = self._matches.get(key, 0) + 1
            fires = (
                (rule.first is not None and seen <= rule.first)
                or (rule.every is not None and seen % rule.every == 0)
                or (rule.rate > 0 and self._rng.random() < rule.rate)
            )
            if fires and chosen is None:
                chosen = rule
        return chosen


def _matches(rule: FaultRule, provider: str, route: RouteKind) -> bool:
    """Whether ``rule`` applies to a request to ``provider``'s ``route``."""
    if rule.provider not in ("*", provider) or rule.route not in ("*", route):
        return False
    return rule.kind not in RESHAPING or route == "status"


def reshape(body: object, path: Sequence[str], kind: FaultKind) -> bool:
    """Remove, mistype or replace the status field at ``path`` in ``body``, in place.

    Returns:
        Whether the field was there to be rewritten.
    """
    parent = body
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or path[-1] not in parent:
        return False
    if kind == "missing_field":
        del parent[path[-1]]
    elif kind == "mistyped_field":
        parent[path[-1]] = 42
    else:
        parent[path[-1]] = UNKNOWN_STATUS
    return True


class SimulatedReset(httpx.ReadError):
    """Raised by the app to drop a connection mid-response.

    Under a real server the client sees the connection close before the declared
    body arrived; in-process (``httpx.ASGITransport``) the client sees this error,
    which is an ``httpx.TransportError`` like the one a real reset causes.
    """


class ResetResponse(Response):
    """Start a response that promises more body than it sends, then drop the connection."""

    def __init__(self) -> None:
        """Create the response; nothing is sent until it is called."""
        super().__init__(status_code=200, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers and a fragment of the body, then abort."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
        raise SimulatedReset("connection dropped by fault injection")


HTML_ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><p>The upstream server did not respond.</p></body></html>"
)
TRUNCATED_JSON = b'{"id": "job_7f3a", "status": "que'
