"""A failure belongs to its item, an aborted batch leaves no orphan, reporting is best effort."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import httpx
import pytest
from prefect import flow
from pydantic import BaseModel, ValidationError

from prefect_pollers import BatchItem, BatchOutcome, ExonaCredentials, Outcome, WaitTimeoutError
from prefect_pollers.batch import runner
from prefect_pollers.batch.items import run_items, secrets_of
from prefect_pollers.batch.progress import BatchProgress
from prefect_pollers.events.tables import publish_table
from prefect_pollers.providers.protocol import JobResult
from prefect_pollers.tasks.observed import observed_wait
from prefect_pollers.testing import VirtualClock, use_clock
from prefect_pollers.testing.simulator import SimulatorConfig, create_app
from tests.sim_client import VirtualSimClock

KEY = "sk-very-secret-key"
LOGGER = logging.getLogger("tests.item_failures")


def items(n: int) -> list[BatchItem]:
    return [
        BatchItem(
            label=f"Co {i}",
            key=f"k{i}",
            request={"company_name": f"Co {i}", "company_website": f"https://c{i}.example"},
        )
        for i in range(n)
    ]


class _Strict(BaseModel):
    size: int


def test_any_exception_becomes_the_items_error_outcome_with_no_secret():
    item = BatchItem(label="Acme", key="acme-1", request=None)
    outcome = BatchOutcome.of_exception(
        item, ValueError(f"bad template https://x/{KEY}/{{id"), secrets=(KEY,)
    )
    assert outcome.outcome is Outcome.ERROR and outcome.error_type == "ValueError"
    assert outcome.error is not None and "'Acme'" in outcome.error and "acme-1" in outcome.error
    assert KEY not in outcome.error
    timed_out = BatchOutcome.of_exception(
        item, WaitTimeoutError("late", last_status=None, job_id="j1")
    )
    assert timed_out.outcome is Outcome.TIMED_OUT and timed_out.job_id == "j1"


async def test_the_batch_goes_on_past_any_items_exception():
    def validation_error() -> ValidationError:
        try:
            _Strict.model_validate({"size": "big"})
        except ValidationError as exc:
            return exc
        raise AssertionError

    raised: dict[str, Exception] = {
        "k0": ValueError("unmatched '{' in the URL template"),
        "k1": validation_error(),
        "k2": KeyError("a bug"),
    }

    async def work(item: BatchItem) -> Any:
        if item.key in raised:
            raise raised[item.key]
        return None if item.key == "k3" else _Result(job_id=item.key)

    outcomes = await run_items(items(5), work, concurrency=2)
    assert {k: o.error_type for k, o in outcomes.items()} == {
        "k0": "ValueError",
        "k1": "ValidationError",
        "k2": "KeyError",
        "k4": None,  # k3 was handed over: no outcome here
    }
    assert outcomes["k4"].outcome is Outcome.SUCCEEDED


class _Result(JobResult):
    pass


class _Abort(BaseException):
    """Not an item's failure: the batch itself aborts."""


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("abort", ["cancelled", "crashed"])
async def test_an_aborted_batch_leaves_no_wait_polling(abort: str):
    clock = VirtualClock()
    app = create_app(SimulatorConfig(seed=3, never_finish_rate=1.0), clock=VirtualSimClock(clock))
    state = app.state.simulator
    block = ExonaCredentials(api_key="sim-key", base_url="http://sim/exona/api/v1")
    with use_clock(clock):
        async with block.get_client(transport=httpx.ASGITransport(app=app)) as client:

            async def work(item: BatchItem) -> Any:
                if item.key == "k5":  # starts last: the others are waiting by then
                    await clock.sleep(200)
                    raise _Abort
                ref = await client.submit(item.request, idempotency_key=item.key)
                return await observed_wait(block, ref, None, logger=LOGGER, client=client)

            batch = asyncio.ensure_future(run_items(items(6), work, concurrency=6))
            await clock.sleep(250 if abort == "crashed" else 120)
            if abort == "cancelled":
                batch.cancel()
            with pytest.raises((asyncio.CancelledError, _Abort)):  # bare, not in a group
                await batch
            calls = state.stats()["exona"]["status_calls"]
            assert calls > 0
            await clock.sleep(600)
            assert state.stats()["exona"]["status_calls"] == calls, "an orphan kept polling"
    await state.aclose()


async def test_progress_and_tables_survive_a_failing_artifact_api(monkeypatch, caplog):
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise httpx.ConnectError("the Prefect API is down")

    monkeypatch.setattr("prefect_pollers.batch.progress.acreate_progress_artifact", refuse)
    monkeypatch.setattr("prefect_pollers.batch.progress.aupdate_progress_artifact", refuse)
    monkeypatch.setattr("prefect_pollers.events.tables.acreate_table_artifact", refuse)
    caplog.set_level(logging.DEBUG, logger="prefect.prefect_pollers.events.reporting")

    progress = BatchProgress("failing-api batch", 3)
    await progress.start()
    assert progress.artifact_id is None
    progress.attach(uuid.uuid4(), 0)  # as the poller continues a flow's artifact
    for _ in range(3):
        await progress.finished_one()
    assert progress.done == 3
    await publish_table("failing-api", "t", [_Result(job_id="j")])
    await publish_table("failing-api", "t", [_Result(job_id="j")])

    ours = [r for r in caplog.records if r.name == "prefect.prefect_pollers.events.reporting"]
    assert [r.levelno for r in ours if r.levelno >= logging.WARNING] == [logging.WARNING] * 2
    assert all(r.exc_info is None for r in ours)  # no traceback


@pytest.mark.usefixtures("prefect_harness")
async def test_run_batch_gives_an_unexpected_exception_to_its_item(sim, monkeypatch):
    real = runner.observed_wait

    async def broken_for_one(credentials: Any, ref: Any, *args: Any, **kwargs: Any) -> Any:
        if ref.idempotency_key.endswith(":1"):
            raise ValueError("unmatched '{' in the status URL template")
        return await real(credentials, ref, *args, **kwargs)

    monkeypatch.setattr(runner, "observed_wait", broken_for_one)
    block = ExonaCredentials(api_key="sim-key", base_url=sim.base_url("exona"), policy_scale=0.01)
    batch = [
        item.model_copy(update={"key": f"item-failures:{i}"}) for i, item in enumerate(items(3))
    ]

    @flow
    async def batch_flow() -> list[BatchOutcome[Any]]:
        return await runner.run_batch(block, batch, task_runs="batched", concurrency=3)

    outcomes = await batch_flow()
    assert [o.outcome for o in outcomes] == [Outcome.SUCCEEDED, Outcome.ERROR, Outcome.SUCCEEDED]
    assert outcomes[1].error_type == "ValueError" and "Co 1" in (outcomes[1].error or "")
    assert secrets_of(block) == ("sim-key",)


class _Signal(BaseException):
    """Stands in for Prefect's TerminationSignal, raised in the run when it is cancelled."""


async def test_a_signal_inside_an_item_aborts_the_batch_bare_not_in_a_group():
    # The flow engine ends a run as Cancelled on its TerminationSignal, but as Crashed
    # on a BaseExceptionGroup holding it: run_items re-raises the signal itself.
    started = asyncio.Event()

    async def work(item: BatchItem) -> Any:
        if item.key == "k1":
            await started.wait()
            raise _Signal()
        started.set()
        await asyncio.sleep(60)  # cancelled with the batch

    items = [BatchItem(label=f"i{i}", key=f"k{i}", request={}) for i in range(3)]
    with pytest.raises(_Signal):
        await run_items(items, work)
