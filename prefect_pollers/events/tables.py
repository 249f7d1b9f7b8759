"""Tables of results, published as Prefect artifacts (best effort)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from prefect.artifacts import acreate_table_artifact
from pydantic import BaseModel

from prefect_pollers.events.reporting import best_effort


def artifact_key(text: str) -> str:
    """A Prefect artifact key made from ``text`` (lowercase letters, digits, dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "batch"


async def publish_table(key: str, title: str, rows: Sequence[BaseModel]) -> None:
    """Publish rows as a keyed table artifact (shown on the Artifacts page).

    Rows with a ``status`` field are counted in the description. A Prefect API
    error is logged once as a warning, never raised: the table reports on work that
    is done.

    Args:
        key: The artifact key (made valid with :func:`artifact_key`).
        title: Starts the description.
        rows: One model per row.
    """
    ok = sum(str(getattr(row, "status", None)) == "succeeded" for row in rows)
    with best_effort(f"the table artifact {artifact_key(key)!r}"):
        await acreate_table_artifact(
            key=artifact_key(key),
            table=[row.model_dump(mode="json") for row in rows],
            description=f"{title}: {ok} of {len(rows)} succeeded.",
        )
