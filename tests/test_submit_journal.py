"""The submit journal: refs recorded in pages and read back; a failed write loses nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from prefect_pollers import BatchItem, ExonaCredentials
from prefect_pollers.batch.submit import SubmitJournal, journal_key
from prefect_pollers.engine import JobRef

CREDENTIALS = ExonaCredentials(api_key="k", base_url="http://127.0.0.1:9/v1")
ITEMS = [
    BatchItem(label=f"c{i}", key=f"scope:{i}", request={"company_name": f"C{i}"}) for i in range(5)
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


@pytest.fixture
def failing_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local storage whose next write fails."""
    write = LocalFileSystem.awrite_path
    failures = [OSError("disk full")]

    async def awrite_path(self: LocalFileSystem, path: str, content: bytes) -> str:
        if failures:
            raise failures.pop()
        return await write(self, path, content)

    monkeypatch.setattr(LocalFileSystem, "awrite_path", awrite_path)


def store_at(storage: LocalFileSystem) -> ResultStore:
    return ResultStore(result_storage=storage, cache_result_in_memory=False)


async def run(journal: SubmitJournal, items: list[BatchItem]) -> list[JobRef]:
    async with journal:
        return list(await asyncio.gather(*(journal.submit(item) for item in items)))


async def test_refs_are_written_in_pages_and_read_back_without_submitting_again(
    tmp_path, announced
):
    store = store_at(LocalFileSystem(basepath=str(tmp_path)))
    client = CountingClient()
    first = SubmitJournal(CREDENTIALS, client, ITEMS, store, page_size=2, flush_interval=60)  # type: ignore[arg-type]
    refs = await run(first, ITEMS)
    assert sorted(client.submits) == sorted(item.key for item in ITEMS)
    # Pages of 2 or more and the rest at exit: fewer writes than submits.
    assert 2 <= first.pages_written < len(ITEMS)
    last = first.pages_written - 1
    assert await store.aexists(journal_key(CREDENTIALS, [i.key for i in ITEMS], last))

    again = SubmitJournal(CREDENTIALS, client, ITEMS, store)  # type: ignore[arg-type]
    assert await run(again, ITEMS) == refs
    assert len(client.submits) == len(ITEMS) and again.recorded == len(ITEMS)
    assert len(announced) == len(ITEMS)  # announced once, when submitted


async def test_a_batch_of_other_items_has_its_own_journal(tmp_path):
    store = store_at(LocalFileSystem(basepath=str(tmp_path)))
    client = CountingClient()
    await run(SubmitJournal(CREDENTIALS, client, ITEMS, store), ITEMS)  # type: ignore[arg-type]
    other = [BatchItem(label="x", key="other:0", request={"company_name": "X"})]
    await run(SubmitJournal(CREDENTIALS, client, other, store), other)  # type: ignore[arg-type]
    assert client.submits[-1] == "other:0"


async def test_a_failed_page_write_keeps_its_refs_for_the_next_write(tmp_path, failing_once):
    store = store_at(LocalFileSystem(basepath=str(tmp_path)))
    client = CountingClient()
    journal = SubmitJournal(CREDENTIALS, client, ITEMS, store, flush_interval=0.01)  # type: ignore[arg-type]
    async with journal:
        await asyncio.gather(*(journal.submit(item) for item in ITEMS[:3]))
        await asyncio.sleep(0.1)  # the periodic flush fails once, then succeeds
        await journal.submit(ITEMS[3])
    again = SubmitJournal(CREDENTIALS, client, ITEMS, store)  # type: ignore[arg-type]
    await run(again, ITEMS[:4])
    assert len(client.submits) == 4 and again.recorded == 4


async def test_the_last_write_failing_is_raised(tmp_path, failing_once):
    store = store_at(LocalFileSystem(basepath=str(tmp_path)))
    journal = SubmitJournal(CREDENTIALS, CountingClient(), ITEMS, store, flush_interval=60)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk full"):
        await run(journal, ITEMS[:1])
