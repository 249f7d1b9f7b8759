"""Where submitted job refs are recorded, so that nothing is submitted twice.

A submit's ref is recorded in Prefect's result store under a key made from the
provider, a digest of the base URL and the submit's idempotency key (never the API
key). :func:`~prefect_pollers.tasks.submit_job` caches under it, and batched submits
read and write the same records, so both modes re-attach to each other's jobs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from prefect.runtime import flow_run
from pydantic import BaseModel

from prefect_pollers.providers.base import JobApiCredentials

NO_FLOW_RUN_SCOPE = "no-flow-run"
"""The scope of default idempotency keys made outside any flow run."""


def default_scope() -> str:
    """The scope of default idempotency keys: the current flow run's id.

    A retry of the same flow run gets the same scope, so it re-attaches to the jobs
    it submitted; outside a flow run it is :data:`NO_FLOW_RUN_SCOPE`.
    """
    return flow_run.get_id() or NO_FLOW_RUN_SCOPE


def request_digest(request: BaseModel | dict[str, Any]) -> str:
    """A digest of a request's content, as given (a model or a dict)."""
    data = request.model_dump(mode="json") if isinstance(request, BaseModel) else request
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def record_key(credentials: JobApiCredentials[Any], idempotency_key: str) -> str:
    """Where the ref of the job submitted under ``idempotency_key`` is recorded.

    Names the provider and a digest of the base URL, never the API key.
    """
    endpoint = hashlib.sha256(credentials.base_url.encode()).hexdigest()[:12]
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return f"prefect-pollers-submit-{credentials.provider}-{endpoint}-{digest}"
