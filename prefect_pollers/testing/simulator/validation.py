"""Request-body checks that name the offending field, for 422 responses."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from prefect_pollers.testing.simulator.errors import Invalid


async def json_object(request: Request) -> dict[str, Any]:
    """Parse the request body as a JSON object."""
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise Invalid("body", f"not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object")
    return body


def non_empty_str(body: dict[str, Any], key: str, where: str = "") -> str:
    """Return ``body[key]``, which must be a non-empty string."""
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise Invalid(where + key, _problem(key in body, "a non-empty string"))
    return value


def an_object(body: dict[str, Any], key: str, where: str = "", *, required: bool) -> dict[str, Any]:
    """Return ``body[key]``, which must be a JSON object; ``{}`` if optional and absent."""
    if key not in body and not required:
        return {}
    value = body.get(key)
    if not isinstance(value, dict):
        raise Invalid(where + key, _problem(key in body, "an object"))
    return value


def optional_non_negative_int(body: dict[str, Any], key: str) -> int | None:
    """Return ``body[key]`` if present; it must be an integer >= 0 (booleans refused)."""
    if key not in body:
        return None
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(key, "must be an integer >= 0")
    return value


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def loopback_url(body: dict[str, Any], key: str, where: str = "") -> str:
    """``body[key]``, which must be an http(s) URL on loopback (callbacks go nowhere else)."""
    url = non_empty_str(body, key, where)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK_HOSTS:
        raise Invalid(
            f"{where}{key}", "must be an http(s) URL on 127.0.0.1 or localhost (loopback only)"
        )
    return url


def _problem(present: bool, expected: str) -> str:
    """Say whether a field is missing or of the wrong kind."""
    return f"must be {expected}" if present else f"is required ({expected})"
