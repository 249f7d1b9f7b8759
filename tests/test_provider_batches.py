"""Provider batches (issue 28): each request one outcome, each batch created once.

Every test runs ``provider_batch_outcomes`` against the in-process simulator of
OpenAI Batch and Anthropic Message Batches, on a virtual clock, with a ledger of its
own; what was created is read from the simulator's counters, what became of each
item from the outcome files.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_pollers import BatchItem, Outcome, OutcomeFiles
from prefect_pollers.batch.provider_batch_progress import ProviderBatchProgress, finished
from prefect_pollers.batch.provider_batches import provider_batch_outcomes
from prefect_pollers.client import JobApiClient
from prefect_pollers.ledger import Ledger
from prefect_pollers.ledger.packs import PackLedger
from prefect_pollers.ledger.submitter import endpoint_of
from prefect_pollers.providers import AnthropicBatchResult, OpenAIBatchResult
from prefect_pollers.providers.provider_batch import ProviderBatchCredentials
from prefect_pollers.testing import VirtualClock, use_clock
from prefect_pollers.testing.registry import provider_entry
from prefect_pollers.testing.simulator import FaultRule, SimulatorConfig, create_app
from tests.sim_client import VirtualSimClock

pytestmark = pytest.mark.usefixtures("prefect_harness")

NAMES = ("openai-batch", "anthropic-batch")
FAST = {"batch_duration": (60.0, 120.0), "seed": 5}


@dataclass
class Sim:
    """A simulator, a block on it, a ledger and where outcomes go."""

    credentials: ProviderBatchCredentials
    client: JobApiClient[Any]
    ledger: Ledger
    directory: Path
    app: Any
    clock: VirtualClock

    @property
    def stats(self) -> dict[str, Any]:
        return self.app.state.simulator.stats()[self.credentials.provider]

    async def run(self, items: list[BatchItem]) -> OutcomeFiles:
        return await provider_batch_outcomes(
            self.credentials,
            items,
            ledger=self.ledger,
            client=self.client,
            directory=self.directory,
        )


@asynccontextmanager
async def batch_sim(
    name: str, tmp_path: Path, *, limit: int = 10, **config: Any
) -> AsyncIterator[Sim]:
    clock = VirtualClock()
    app = create_app(SimulatorConfig(**{**FAST, **config}), clock=VirtualSimClock(clock))
    entry = provider_entry(name)
    block = entry.block(
        f"http://sim{entry.simulator_prefix}", "sim-key", max_requests_per_batch=limit
    )
    assert isinstance(block, ProviderBatchCredentials)
    ledger = Ledger(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    with use_clock(clock):
        async with block.get_client(transport=httpx.ASGITransport(app=app)) as client:
            yield Sim(block, client, ledger, tmp_path / "outcomes", app, clock)
    await ledger.aclose()
    await app.state.simulator.aclose()


def request(name: str, text: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    if name == "openai-batch":
        return {"model": "gpt-4o-mini", "messages": messages}
    return {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": messages}


def tickets(name: str, count: int, *, failing: tuple[int, ...] = ()) -> list[BatchItem]:
    return [
        BatchItem(
            label=f"ticket {i}",
            key=f"ticket-{i}",
            request=request(name, f"ticket {i}: {'FAIL ' if i in failing else ''}help"),
        )
        for i in range(count)
    ]


def by_key(outcomes: OutcomeFiles, *, twins: str | None = None) -> dict[str, Any]:
    """Each item's outcome by key (an item labelled ``twins`` repeats another's key)."""
    found: dict[str, Any] = {}
    for outcome in outcomes.read():
        if outcome.label == twins:
            continue
        assert outcome.key not in found, f"two outcomes for {outcome.key}"
        found[outcome.key] = outcome
    return found


@pytest.mark.parametrize("name", NAMES)
async def test_every_item_gets_one_outcome_and_each_batch_is_created_once(
    name: str, tmp_path: Path
) -> None:
    async with batch_sim(name, tmp_path) as sim:
        items = tickets(name, 25, failing=(7,))
        outcomes = await sim.run(items)
        assert sim.stats["batches_created"] == 3  # 10 + 10 + 5 requests
        found = by_key(outcomes)
        assert set(found) == {item.key for item in items}
        assert outcomes.counts == {"succeeded": 24, "failed": 1}
        failed = found["ticket-7"]
        assert failed.outcome == Outcome.FAILED and "contains FAIL" in failed.error
        result = found["ticket-3"].result
        assert isinstance(result, (OpenAIBatchResult, AnthropicBatchResult))
        assert result.custom_id == "ticket-3" and result.job_id == found["ticket-3"].job_id
        assert len({outcome.job_id for outcome in found.values()}) == 3


@pytest.mark.parametrize("name", NAMES)
async def test_a_rerun_creates_nothing_and_a_changed_item_set_only_the_new_items(
    name: str, tmp_path: Path
) -> None:
    async with batch_sim(name, tmp_path) as sim:
        first = by_key(await sim.run(tickets(name, 20)))
        again = by_key(await sim.run(tickets(name, 20)))
        assert sim.stats["batches_created"] == 2
        assert {k: o.job_id for k, o in again.items()} == {k: o.job_id for k, o in first.items()}
        grown = await sim.run(tickets(name, 25))
        assert sim.stats["batches_created"] == 3  # only the 5 new items
        assert grown.counts == {"succeeded": 25}
        subset = await sim.run(tickets(name, 25)[:12])  # a part of the batches, re-read
        assert sim.stats["batches_created"] == 3 and subset.counts == {"succeeded": 12}


@pytest.mark.parametrize("name", NAMES)
async def test_items_that_cannot_be_sent_are_refused_alone(name: str, tmp_path: Path) -> None:
    async with batch_sim(name, tmp_path) as sim:
        items = tickets(name, 4)
        items.append(BatchItem(label="no model", key="bad-request", request={"messages": []}))
        items.append(items[0].model_copy(update={"label": "twin"}))
        items.append(items[1].model_copy(update={"key": "not a custom id!"}))
        outcomes = await sim.run(items)
        found = by_key(outcomes, twins="twin")
        if name == "openai-batch":  # any custom_id will do
            assert outcomes.counts == {"succeeded": 5, "error": 2}
        else:
            assert outcomes.counts == {"succeeded": 4, "error": 3}
        assert "item 4 ('no model'): model: Field required" in found["bad-request"].error
        twin = [o for o in outcomes.read() if o.label == "twin"]
        assert twin and "unique" in twin[0].error
        if name == "anthropic-batch":
            assert "custom_id" in found["not a custom id!"].error
        assert sim.stats["batches_created"] == 1


async def test_a_request_line_over_the_byte_limit_is_refused_alone(tmp_path: Path) -> None:
    async with batch_sim("openai-batch", tmp_path) as sim:
        sim.credentials = sim.credentials.model_copy(update={"max_bytes_per_batch": 2_000})
        items = tickets("openai-batch", 3)
        items.append(
            BatchItem(label="big", key="big", request=request("openai-batch", "x" * 5_000))
        )
        outcomes = await sim.run(items)
        found = by_key(outcomes)
        assert (
            found["big"].outcome == Outcome.ERROR and "over the API's limit" in found["big"].error
        )
        assert outcomes.counts == {"succeeded": 3, "error": 1}


@pytest.mark.parametrize("name", NAMES)
async def test_a_malformed_results_line_is_its_items_outcome_alone(
    name: str, tmp_path: Path
) -> None:
    async with batch_sim(name, tmp_path, batch_malformed_line_rate=0.3) as sim:
        outcomes = await sim.run(tickets(name, 20))
        broken = sim.stats["malformed_lines_written"]
        assert broken > 0
        assert outcomes.counts == {"succeeded": 20 - broken, "error": broken}
        assert all("not a JSON object" in o.error for o in outcomes.failures())


@pytest.mark.parametrize("name", NAMES)
async def test_an_expired_batch_keeps_its_results_and_names_the_rest_expired(
    name: str, tmp_path: Path
) -> None:
    async with batch_sim(name, tmp_path, batch_expire_rate=1.0) as sim:
        outcomes = await sim.run(tickets(name, 10))
        found = by_key(outcomes)
        assert len(found) == 10
        assert set(outcomes.counts) <= {"succeeded", "expired"}
        assert outcomes.counts.get("expired", 0) > 0


async def test_a_create_that_failed_before_the_batch_existed_reuses_its_upload(
    tmp_path: Path,
) -> None:
    fault = FaultRule(kind="http_500", route="submit", first=1)
    async with batch_sim("openai-batch", tmp_path, faults=[fault]) as sim:
        items = tickets("openai-batch", 5)
        first = await sim.run(items)  # the 500 may have created it: not re-sent
        assert first.counts == {"error": 5}
        assert "look for the job at the provider" in first.failures()[0].error
        assert sim.stats["batches_created"] == 0 and sim.stats["files_uploaded"] == 1
        again = await sim.run(items)  # looked up by its key: none; created with the upload
        assert again.counts == {"succeeded": 5}
        assert sim.stats["batches_created"] == 1 and sim.stats["files_uploaded"] == 1


async def test_a_lost_create_answer_is_found_by_its_key(tmp_path: Path) -> None:
    fault = FaultRule(kind="reset_after_create", route="submit", first=1)
    async with batch_sim("openai-batch", tmp_path, faults=[fault]) as sim:
        items = tickets("openai-batch", 5)
        await sim.run(items)
        again = await sim.run(items)
        assert again.counts == {"succeeded": 5}
        assert sim.stats["batches_created"] == 1


async def test_an_anthropic_create_that_may_have_happened_is_not_sent_again(
    tmp_path: Path,
) -> None:
    fault = FaultRule(kind="http_500", route="submit", first=1)
    async with batch_sim("anthropic-batch", tmp_path, faults=[fault]) as sim:
        items = tickets("anthropic-batch", 5)
        await sim.run(items)
        again = await sim.run(items)
        assert again.counts == {"error": 5}
        assert "prefect-pollers ledger" in again.failures()[0].error
        assert sim.stats["batches_created"] == 0


async def test_a_second_run_packing_the_same_items_differently_sends_none_twice(
    tmp_path: Path,
) -> None:
    async with batch_sim("openai-batch", tmp_path) as sim:
        items = tickets("openai-batch", 12)
        packs = PackLedger(sim.ledger, endpoint_of(sim.credentials))
        assert await packs.claim("pack-other", [(items[3].key, "d3"), (items[4].key, "d4")])
        assert not await packs.claim("pack-mine", [(items[4].key, "d4"), (items[5].key, "d5")])
        assert (await packs.claims([items[5].key])) == {}  # all or none


def test_progress_counts_what_each_api_calls_finished() -> None:
    assert finished({"total": 100, "completed": 95, "failed": 3}) == 98
    assert (
        finished({"processing": 2, "succeeded": 5, "errored": 1, "canceled": 1, "expired": 1}) == 8
    )
    progress = ProviderBatchProgress("triage", 10)
    progress.counts["batch_1"] = {"total": 10, "completed": 4, "failed": 1}
    assert progress.description() == (
        "triage: 5 of 10 requests finished; batch_1: total 10, completed 4, failed 1"
    )


async def test_outcome_files_are_read_back_lazily_with_their_result_type(tmp_path: Path) -> None:
    async with batch_sim("anthropic-batch", tmp_path) as sim:
        outcomes = await sim.run(tickets("anthropic-batch", 3))
    restored = OutcomeFiles.model_validate_json(outcomes.model_dump_json())
    results = [o.result for o in restored.read()]
    assert all(isinstance(r, AnthropicBatchResult) for r in results)
    assert keys_in(restored.files) == {"ticket-0", "ticket-1", "ticket-2"}


def keys_in(files: list[str]) -> set[str]:
    return {
        json.loads(line)["key"] for name in files for line in Path(name).read_text().splitlines()
    }


@pytest.mark.parametrize("name", NAMES)
async def test_a_batch_handed_over_gets_its_outcomes_when_run_again_not_a_second_create(
    name: str, tmp_path: Path
) -> None:
    # The durable path's two task runs: the first hands every batch over (its wait
    # returns None), the second (the resumed run) finds them and reads their results.
    handed: list[str] = []

    async def hand_over(ref: Any, on_status: Any) -> None:
        handed.append(ref.job_id)

    async with batch_sim(name, tmp_path) as sim:
        items = tickets(name, 25, failing=(3,))
        first = await provider_batch_outcomes(
            sim.credentials,
            items,
            ledger=sim.ledger,
            client=sim.client,
            directory=sim.directory,
            wait=hand_over,
        )
        assert len(handed) == 3 and sim.stats["batches_created"] == 3
        assert sum(first.counts.values()) == 0  # no outcome for a handed-over batch
        assert {batch["state"] for batch in first.batches} == {"handed over"}
        resumed = await sim.run(items)
        assert sim.stats["batches_created"] == 3  # found in the ledger, not created again
    outcomes = by_key(resumed)
    assert sorted(outcomes) == sorted(item.key for item in items)
    assert {outcomes[key].job_id for key in outcomes} == set(handed)
    assert outcomes["ticket-3"].outcome is Outcome.FAILED
    assert resumed.counts == {"succeeded": 24, "failed": 1}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["empty", "malformed_json"])
async def test_a_results_file_shorter_than_the_counts_is_read_again(
    name: str, kind: str, tmp_path: Path
) -> None:
    # A proxy's 200 with an empty or cut body looks like a results file without lines:
    # the final status's request counts say how many there are, so it is read again.
    fault = FaultRule(kind=kind, route="result", first=1)  # type: ignore[arg-type]
    async with batch_sim(name, tmp_path, faults=[fault]) as sim:
        outcomes = await sim.run(tickets(name, 8, failing=(3,)))
        assert sim.stats["faults_injected"] == {kind: 1}
    assert outcomes.counts == {"succeeded": 7, "failed": 1}
