"""The ledger's semantics, on SQLite: reserve then submit, one create per key, whatever runs."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from prefect_pollers import ExonaCredentials
from prefect_pollers.engine import JobRef, ProviderUnavailableError, TransientRequestError
from prefect_pollers.ledger import (
    KeyReuseError,
    Ledger,
    LedgerSubmitter,
    SubmitState,
    SubmitUncertainError,
)
from prefect_pollers.ledger import store as ledger_store
from prefect_pollers.ledger.schema import LedgerSchemaError, schema_version

CREDENTIALS = ExonaCredentials(api_key="k", base_url="http://127.0.0.1:9/v1")


def request(i: int, name: str | None = None) -> dict[str, Any]:
    return {"company_name": name or f"Company {i}"}


class Provider:
    """Stands in for the provider: counts creates per key, can fail or stall."""

    def __init__(self) -> None:
        self.creates: dict[str, int] = {}
        self.ids = itertools.count()
        self.fail: dict[str, BaseException] = {}
        self.delay = 0.0
        self.sending = asyncio.Event()

    def sender(self, key: str):
        async def send() -> JobRef:
            self.sending.set()  # its key is reserved: the ledger has its row
            if self.delay:
                await asyncio.sleep(self.delay)
            if key in self.fail:
                raise self.fail.pop(key)
            self.creates[key] = self.creates.get(key, 0) + 1
            return JobRef(
                provider="exona",
                job_id=f"job-{next(self.ids)}",
                submitted_at=datetime.now(timezone.utc),
                idempotency_key=key,
            )

        return send


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL for this module (Debian's package, `make postgresql`), stopped after it."""
    from deployments.postgres import local_postgres

    with local_postgres(durable=False) as url:
        yield url


_databases = itertools.count()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)],
)
async def ledger(request, tmp_path):
    """A new, empty ledger: a SQLite file, or a database of its own on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    else:
        from deployments.postgres import create_database

        base = request.getfixturevalue("postgres_url")
        url = await asyncio.to_thread(create_database, base, f"ledger_{next(_databases)}")
    ledger = Ledger(url)
    yield ledger
    await ledger.aclose()


async def run_batch(
    ledger: Ledger, provider: Provider, items: list[tuple[str, dict[str, Any]]]
) -> dict[str, JobRef | BaseException]:
    async with LedgerSubmitter(CREDENTIALS, flow_run_id="run-1", ledger=ledger) as submitter:

        async def one(key: str, req: dict[str, Any]) -> JobRef | BaseException:
            try:
                ref, _ = await submitter.submit(key, req, provider.sender(key))
            except Exception as exc:
                return exc
            return ref

        results = await asyncio.gather(*(one(k, r) for k, r in items))
    return dict(zip([k for k, _ in items], results, strict=True))


def batch(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [(f"p:{i}", request(i)) for i in range(n)]


async def test_a_superset_submits_only_the_new_item(ledger):
    provider = Provider()
    first = await run_batch(ledger, provider, batch(50))
    again = await run_batch(ledger, provider, batch(51))
    assert sum(provider.creates.values()) == 51
    assert all(provider.creates[key] == 1 for key in provider.creates)
    assert all(again[key] == first[key] for key in first)


async def test_a_subset_or_a_reordering_submits_nothing(ledger):
    provider = Provider()
    first = await run_batch(ledger, provider, batch(20))
    subset = await run_batch(ledger, provider, batch(20)[5:12])
    reordered = await run_batch(ledger, provider, list(reversed(batch(20))))
    assert sum(provider.creates.values()) == 20
    assert all(subset[k] == first[k] for k in subset)
    assert reordered == first


async def test_a_key_reused_for_another_request_is_refused_and_nothing_is_sent(ledger):
    provider = Provider()
    await run_batch(ledger, provider, [("p:0", request(0))])
    result = await run_batch(ledger, provider, [("p:0", request(0, name="Other"))])
    error = result["p:0"]
    assert isinstance(error, KeyReuseError)
    assert "p:0" in str(error) and "digest" in str(error)
    assert provider.creates == {"p:0": 1}


@pytest.mark.parametrize("size", [30, 2000])
async def test_two_live_copies_of_a_batch_create_each_job_once(ledger, size):
    # 2,000: the copy that waits looks whether the other runs once per wait, not once per
    # key (2,000 looks at once ran out SQLite's busy timeout: "database is locked").
    provider = Provider()
    provider.delay = 0.05
    other = Ledger(ledger.url)  # another process's engine on the same file
    items = batch(size)
    first, second = await asyncio.gather(
        run_batch(ledger, provider, items), run_batch(other, provider, items)
    )
    await other.aclose()
    assert provider.creates == {key: 1 for key, _ in items}
    assert first == second


async def test_a_submit_that_created_nothing_gives_its_key_back(ledger):
    provider = Provider()
    provider.fail["p:0"] = ProviderUnavailableError("down", provider="exona")
    result = await run_batch(ledger, provider, [("p:0", request(0))])
    assert isinstance(result["p:0"], ProviderUnavailableError)
    assert await ledger.rows("exona", ["p:0"]) == {}
    again = await run_batch(ledger, provider, [("p:0", request(0))])
    assert isinstance(again["p:0"], JobRef) and provider.creates == {"p:0": 1}


async def test_a_submit_that_may_have_created_is_never_sent_again(ledger):
    provider = Provider()
    provider.fail["p:0"] = TransientRequestError(
        "timed out", provider="exona", idempotency_key="p:0", may_have_created=True
    )
    await run_batch(ledger, provider, [("p:0", request(0))])
    again = await run_batch(ledger, provider, [("p:0", request(0))])
    error = again["p:0"]
    assert isinstance(error, SubmitUncertainError) and error.may_have_created
    assert "prefect-pollers ledger show p:0" in str(error)
    assert provider.creates == {}
    (row,) = await ledger.rows_named("p:0")
    assert row.state == SubmitState.UNCERTAIN and "timed out" in (row.error or "")
    assert await ledger.release_key("p:0") == 1
    third = await run_batch(ledger, provider, [("p:0", request(0))])
    assert isinstance(third["p:0"], JobRef) and provider.creates == {"p:0": 1}


async def test_where_the_provider_deduplicates_an_uncertain_key_is_sent_again(ledger, monkeypatch):
    monkeypatch.setattr(
        "prefect_pollers.ledger.submitter.provider_deduplicates", lambda credentials: True
    )
    provider = Provider()
    provider.fail["p:0"] = TransientRequestError(
        "timed out", provider="exona", idempotency_key="p:0", may_have_created=True
    )
    await run_batch(ledger, provider, [("p:0", request(0))])
    again = await run_batch(ledger, provider, [("p:0", request(0))])
    assert isinstance(again["p:0"], JobRef) and provider.creates == {"p:0": 1}


async def test_a_session_killed_while_sending_leaves_its_keys_uncertain(ledger, monkeypatch):
    provider = Provider()
    provider.delay = 30
    submitter = LedgerSubmitter(CREDENTIALS, flow_run_id="run-1", ledger=ledger)
    await submitter.__aenter__()
    task = asyncio.create_task(submitter.submit("p:0", request(0), provider.sender("p:0")))
    await provider.sending.wait()
    task.cancel()  # killed: no __aexit__, its heartbeat stops
    submitter._heart.cancel()  # type: ignore[union-attr]
    submitter._writer.cancel()  # type: ignore[union-attr]
    monkeypatch.setattr(ledger_store, "OWNER_TTL_S", -1.0)  # its heartbeat is now stale
    provider.delay = 0
    again = await run_batch(ledger, provider, [("p:0", request(0))])
    assert isinstance(again["p:0"], SubmitUncertainError)
    assert provider.creates == {}


async def test_a_cancelled_session_marks_what_it_was_sending_and_gives_back_the_rest(ledger):
    provider = Provider()
    provider.delay = 30
    gate = asyncio.Semaphore(1)

    async def sends_one_at_a_time() -> None:
        async with LedgerSubmitter(CREDENTIALS, flow_run_id="run-1", ledger=ledger) as submitter:

            async def one(key: str) -> None:
                async with gate:
                    await submitter.submit(key, request(int(key[2:])), provider.sender(key))

            await asyncio.gather(one("p:0"), one("p:1"))

    task = asyncio.create_task(sends_one_at_a_time())
    await provider.sending.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (row,) = await ledger.rows_named("p:0")
    assert row.state == SubmitState.UNCERTAIN
    assert await ledger.rows_named("p:1") == []  # never reserved, or given back


async def test_refs_recorded_by_version_0_1_are_found_and_not_submitted_again(tmp_path, ledger):
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    from prefect_pollers.ledger.idempotency import record_key
    from prefect_pollers.ledger.legacy import journal_key

    store = ResultStore(
        result_storage=LocalFileSystem(basepath=str(tmp_path / "results")),
        cache_result_in_memory=False,
    )
    old = JobRef(provider="exona", job_id="old-1", submitted_at=datetime.now(timezone.utc))
    page_ref = old.model_copy(update={"job_id": "old-page"})
    await store.awrite(old, key=record_key(CREDENTIALS, "p:0"))
    keys = ["p:0", "p:1", "p:2"]
    await store.awrite(
        {"p:1": page_ref.model_dump(mode="json")}, key=journal_key(CREDENTIALS, keys, 0)
    )
    provider = Provider()
    async with LedgerSubmitter(
        CREDENTIALS, flow_run_id="run-2", ledger=ledger, store=store, batch_keys=keys
    ) as submitter:
        refs = [
            (await submitter.submit(k, request(i), provider.sender(k)))[0]
            for i, k in enumerate(keys)
        ]
    assert [r.job_id for r in refs[:2]] == ["old-1", "old-page"]
    assert provider.creates == {"p:2": 1}
    again = await run_batch(ledger, provider, [(k, request(i)) for i, k in enumerate(keys)])
    assert again["p:0"] == refs[0] and provider.creates == {"p:2": 1}


async def test_prune_deletes_old_rows_but_not_a_live_sessions(ledger, monkeypatch):
    provider = Provider()
    await run_batch(ledger, provider, batch(3))
    assert await ledger.prune(older_than_s=3600) == {
        "submits": 0,
        "owners": 0,
        "handovers": 0,
        "outcomes": 0,
        "pack_items": 0,
    }
    async with LedgerSubmitter(CREDENTIALS, flow_run_id="live", ledger=ledger) as live:
        provider.delay = 30
        provider.sending.clear()
        task = asyncio.create_task(live.submit("p:9", request(9), provider.sender("p:9")))
        await provider.sending.wait()
        pruned = await ledger.prune(older_than_s=-1)
        assert pruned["submits"] == 3
        assert [row.state for row in await ledger.rows_named("p:9")] == [SubmitState.RESERVED]
        task.cancel()
    assert await ledger.count() == 1  # the cancelled send is uncertain, kept


async def test_a_ledger_written_by_a_newer_version_is_refused(ledger):
    await ledger.upgrade()
    async with ledger.engine.begin() as connection:
        await connection.execute(sa.insert(schema_version).values(version=99, applied_at=0.0))
    newer = Ledger(ledger.url)
    with pytest.raises(LedgerSchemaError, match="version 99"):
        await newer.upgrade()
    await newer.aclose()


async def test_the_schema_is_created_once_and_upgrade_is_idempotent(ledger):
    assert await ledger.upgrade() == 0
    again = Ledger(ledger.url)
    assert await again.upgrade() == 1
    await again.aclose()


async def test_the_cli_shows_what_is_known_of_a_key_and_releases_it(tmp_path, monkeypatch, capsys):
    from prefect_pollers.cli import main

    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("PREFECT_POLLERS_LEDGER_URL", url)
    ledger = Ledger(url)
    provider = Provider()
    provider.fail["p:1"] = TransientRequestError(
        "timed out", provider="exona", idempotency_key="p:1", may_have_created=True
    )
    await run_batch(ledger, provider, batch(2))
    await ledger.aclose()
    cli = asyncio.to_thread  # the CLI runs its own event loop
    assert await cli(main, ["ledger", "show", "p:0"]) == 0
    assert "submitted: job job-" in capsys.readouterr().out
    assert await cli(main, ["ledger", "show", "p:1"]) == 0
    shown = capsys.readouterr().out
    assert "uncertain" in shown and "timed out" in shown and "ledger release p:1" in shown
    assert await cli(main, ["ledger", "release", "p:1"]) == 0
    assert await cli(main, ["ledger", "show", "p:1"]) == 1
    assert await cli(main, ["ledger", "prune", "--older-than", "30d"]) == 0


async def test_prune_deletes_closed_handovers_and_their_outcomes_but_not_open_ones(ledger):
    from prefect_pollers.ledger.durable_rows import (
        add_outcomes,
        close_handovers,
        handover_rows,
        outcome_rows,
        put_handover,
    )

    for run in ("closed-run", "open-run"):
        await put_handover(ledger, run, "b1", {"jobs": []})
        await add_outcomes(ledger, run, "b1", {"k": {"outcome": "succeeded"}})
    await close_handovers(ledger, "closed-run", "resumed")
    pruned = await ledger.prune(older_than_s=-1)
    assert (pruned["handovers"], pruned["outcomes"]) == (1, 1)
    assert not await handover_rows(ledger, "closed-run")
    assert not await outcome_rows(ledger, "closed-run", "b1")
    assert await handover_rows(ledger, "open-run") and await outcome_rows(ledger, "open-run", "b1")
