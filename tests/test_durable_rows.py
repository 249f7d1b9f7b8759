"""Durable records in the ledger (SQLite): handovers and outcomes as rows, written as they come.

Outcomes are added, never rewritten: a write is one transaction of what arrived since
the last; a crash between two writes loses nothing written; the documents of
prefect-pollers 0.1 (result storage) are still read, and copied into rows when the
poller takes their run up.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from prefect_pollers import BatchItem, BatchOutcome
from prefect_pollers.durable.records import (
    DurableRecords,
    HandedOverJob,
    Handover,
    dump_outcome,
    handover_key,
    index_key,
    outcomes_key,
    read_handover,
    read_handovers,
    read_outcomes,
    write_handover,
    write_outcomes,
)
from prefect_pollers.engine import JobRef
from prefect_pollers.ledger import Ledger
from prefect_pollers.ledger.durable_rows import (
    Closed,
    close_handovers,
    open_handover_runs,
    outcome_rows,
)
from prefect_pollers.ledger.schema import outcomes
from prefect_pollers.providers.exona import ExonaScanResult

RUN = "0b7d0d4e-0000-4000-8000-000000000001"
BATCH = "batch-1"


def ref(i: int) -> JobRef:
    return JobRef(provider="exona", job_id=f"scan_{i}", submitted_at=datetime.now(timezone.utc))


def result(i: int) -> ExonaScanResult:
    return ExonaScanResult.model_validate(
        {"job_id": f"scan_{i}", "company_name": f"Co {i}", "company_website": "https://co.ai"}
    )


def outcome(i: int, error: str | None = None) -> BatchOutcome[ExonaScanResult]:
    item = BatchItem(label=f"item {i}", key=f"k{i}", request=None)
    if error:
        return BatchOutcome.of_exception(item, RuntimeError(error))
    return BatchOutcome.succeeded(item, result(i))


def handover(jobs: int = 3) -> Handover:
    return Handover(
        flow_run_id=RUN,
        batch_id=BATCH,
        block_type_slug="exona-credentials",
        block_document_name="prod",
        jobs=[HandedOverJob(key=f"k{i}", label=f"item {i}", ref=ref(i)) for i in range(jobs)],
        title="scans",
    )


@pytest.fixture
async def records(tmp_path: Path):
    ledger = Ledger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    legacy = ResultStore(
        result_storage=LocalFileSystem(basepath=str(tmp_path / "storage")),
        cache_result_in_memory=False,
    )
    yield DurableRecords(ledger, legacy)
    await ledger.aclose()


async def rows_in_table(records: DurableRecords) -> int:
    async with records.ledger.engine.connect() as connection:
        return int(await connection.scalar(sa.select(sa.func.count()).select_from(outcomes)))


async def test_outcomes_are_rows_added_as_they_arrive_and_read_by_row(records):
    await write_handover(records, handover())
    assert await read_outcomes(records, RUN, BATCH) == {}
    await write_outcomes(records, RUN, BATCH, {"k0": outcome(0)})
    assert await rows_in_table(records) == 1
    await write_outcomes(records, RUN, BATCH, {"k1": outcome(1), "k2": outcome(2, "boom")})
    assert await rows_in_table(records) == 3  # added, nothing rewritten
    # A key recorded already keeps its first outcome (a late or second writer changes nothing).
    await write_outcomes(records, RUN, BATCH, {"k0": outcome(0, "late")})
    found = await read_outcomes(records, RUN, BATCH)
    assert set(found) == {"k0", "k1", "k2"}
    assert found["k0"].result == result(0) and found["k2"].error is not None
    assert set(await outcome_rows(records.ledger, RUN, BATCH, keys=["k1"])) == {"k1"}
    again = await read_handover(records, RUN, BATCH)
    assert again is not None and [j.key for j in again.jobs] == ["k0", "k1", "k2"]
    assert again.block_name == "exona-credentials/prod" and again.title == "scans"


async def test_handovers_are_open_until_the_poller_closes_them(records):
    await write_handover(records, handover())
    assert await open_handover_runs(records.ledger) == {RUN}
    await close_handovers(records.ledger, RUN, Closed.RESUMED)
    assert await open_handover_runs(records.ledger) == set()
    assert [h.batch_id for h in await read_handovers(records, RUN)] == [BATCH]  # still read


CRASHING_WRITER = """
import asyncio, os, signal, sys
from prefect.results import ResultStore
from prefect_pollers import BatchItem, BatchOutcome
from prefect_pollers.providers.exona import ExonaScanResult
from prefect_pollers.durable.records import DurableRecords, write_outcomes
from prefect_pollers.ledger import Ledger

async def main():
    records = DurableRecords(Ledger(sys.argv[1]), ResultStore())
    item = BatchItem(label="item 0", key="k0", request=None)
    result = ExonaScanResult(job_id="scan_0", company_name="Co 0", company_website="https://co.ai")
    await write_outcomes(
        records, sys.argv[2], sys.argv[3], {"k0": BatchOutcome.succeeded(item, result)}
    )
    os.kill(os.getpid(), signal.SIGKILL)  # the crash, before the second write

asyncio.run(main())
"""


@pytest.mark.slow  # a subprocess imports Prefect
async def test_a_crash_between_two_outcome_writes_loses_nothing_written(records, tmp_path):
    await write_handover(records, handover())
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WRITER,
        records.ledger.url,
        RUN,
        BATCH,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(writer.communicate(), 120)
    assert writer.returncode == -9, stderr.decode()
    found = await read_outcomes(records, RUN, BATCH)
    assert set(found) == {"k0"} and found["k0"].result == result(0)
    await write_outcomes(records, RUN, BATCH, {"k1": outcome(1), "k2": outcome(2)})
    assert set(await read_outcomes(records, RUN, BATCH)) == {"k0", "k1", "k2"}


async def test_records_of_the_previous_version_are_still_read_and_copied_into_rows(records):
    old = handover()
    data = old.model_dump(mode="json", exclude={"finished"})
    data["finished"] = {}
    legacy = records.legacy
    await legacy.awrite(data, key=handover_key(RUN, BATCH))
    await legacy.awrite([BATCH], key=index_key(RUN))
    await legacy.awrite({"k0": dump_outcome(outcome(0))}, key=outcomes_key(RUN, BATCH))

    # Read as they are (the flow side of a run suspended by 0.1) ...
    found = await read_handover(records, RUN, BATCH)
    assert found is not None and found.block_name == old.block_name
    assert set(await read_outcomes(records, RUN, BATCH)) == {"k0"}
    assert await rows_in_table(records) == 0
    # ... and copied into rows when the poller takes the run up: outcomes then added as rows.
    [taken] = await read_handovers(records, RUN)
    assert [j.key for j in taken.jobs] == ["k0", "k1", "k2"]
    assert await rows_in_table(records) == 1 and await open_handover_runs(records.ledger) == {RUN}
    await write_outcomes(records, RUN, BATCH, {"k1": outcome(1)})
    assert set(await read_outcomes(records, RUN, BATCH)) == {"k0", "k1"}
