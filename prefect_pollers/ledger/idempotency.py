"""Idempotency keys: their default scope, request digests, and 0.1's record keys.

Submits are recorded in the ledger (:mod:`prefect_pollers.ledger`) by provider
endpoint and key. A default key is scoped by the flow run: outside one there is no
scope that would not hand a later run an earlier run's jobs, so a key must be given.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from prefect.runtime import flow_run
from pydantic import BaseModel

from prefect_pollers.engine import InvalidRequestError
from prefect_pollers.providers.base import JobApiCredentials


def default_scope() -> str:
    """The scope of default idempotency keys: the current flow run's id.

    A retry of the same flow run gets the same scope, so it re-attaches to the jobs
    it submitted.

    Raises:
        InvalidRequestError: outside a flow run, where a key must be given.
    """
    flow_run_id = flow_run.get_id()
    if flow_run_id is None:
        raise InvalidRequestError(
            "outside a flow run there is no default idempotency key: pass one that names "
            "this submission (e.g. idempotency_key='nightly-2026-12-02:acme'), so a "
            "later run does not get this run's job back"
        )
    return flow_run_id


def request_digest(request: BaseModel | dict[str, Any]) -> str:
    """A digest of a request's content, as given (a model or a dict)."""
    data = request.model_dump(mode="json") if isinstance(request, BaseModel) else request
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def record_key(credentials: JobApiCredentials[Any], idempotency_key: str) -> str:
    """Where version 0.1 recorded the ref of the job submitted under ``idempotency_key``.

    Names the provider and a digest of the base URL, never the API key.
    """
    endpoint = hashlib.sha256(credentials.base_url.encode()).hexdigest()[:12]
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return f"prefect-pollers-submit-{credentials.provider}-{endpoint}-{digest}"
