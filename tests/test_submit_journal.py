"""A batch's submits through the ledger: by item key, whatever the batch's shape."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest

from prefect_pollers import BatchItem, ExonaCredentials
from prefect_pollers.batch.submit import SubmitJournal
from prefect_pollers.engine import JobRef
from prefect_pollers.ledger import Ledger

CREDENTIALS = ExonaCredentials(api_key="k", base_url="http://127.0.0.1:9/v1")


def items(n: int) -> list[BatchItem]:
    return [
        BatchItem(
            label=f"c{i}",
            key=f"scope:{i}",
            request=CREDENTIALS.parse_request(
                {"company_name": f"C{i}", "company_website": f"https://c{i}.example"}
            ),
        )
        for i in range(n)
    ]


class CountingClient:
    """Stands in for a JobApiClient: counts submits, returns a ref per key."""

    def __init__(self) -> None:
        self.submits: list[str] = []

    async def submit(self, request: Any, *, idempotency_key: str, flow_run_id: Any) -> JobRef:
        self.submits.append(idempotency_key)
        return JobRef(
            provider="exona",
            job_id=f"job-{idempotency_key}",
            submitted_at=datetime.now(timezone.utc),
            idempotency_key=idempotency_key,
        )


@pytest.fixture(autouse=True)
def announced(monkeypatch: pytest.MonkeyPatch) -> list[JobRef]:
    """The submitted events, kept here (outside a flow run there is no run logger)."""
    refs: list[JobRef] = []
    monkeypatch.setattr(
        "prefect_pollers.batch.submit.announce_submitted",
        lambda credentials, ref, log_level: refs.append(ref),
    )
    return refs


async def run(journal: SubmitJournal, batch: list[BatchItem]) -> list[JobRef]:
    async with journal:
        return list(await asyncio.gather(*(journal.submit(item) for item in batch)))


async def test_a_batch_with_one_more_item_submits_that_item_only(tmp_path, announced):
    ledger = Ledger(f"sqlite+aiosqlite:///{tmp_path / 'l.db'}")
    client = CountingClient()
    first = SubmitJournal(CREDENTIALS, client, items(5), None, ledger=ledger)  # type: ignore[arg-type]
    refs = await run(first, items(5))
    assert first.created == 5
    again = SubmitJournal(CREDENTIALS, client, items(6), None, ledger=ledger)  # type: ignore[arg-type]
    assert (await run(again, items(6)))[:5] == refs
    assert again.recorded == 5 and again.created == 1
    assert len(client.submits) == 6 and len(announced) == 6  # announced once, when submitted
    await ledger.aclose()
