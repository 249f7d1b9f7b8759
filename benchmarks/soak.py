"""Soak: 1,000 jobs on five providers, 4,000 provider-batch requests, faults, an API outage.

A real Prefect server (its own home, on a throwaway PostgreSQL as in production: a
SQLite server loses events after a restart, see ``docs/concepts/failures.md``) and
the simulator, each in its own process, with every fault kind of the simulator
injected at low rates on submits, status polls and result fetches, plus failures,
expiries, cancellations and jobs that never end. One flow process per provider runs
a batch of 200 jobs (batched mode, 20 in flight), and one per provider-batch API
(OpenAI Batch, Anthropic Message Batches) 2,000 requests in provider batches of 500,
with failed, expired and malformed results lines. ``OUTAGE_AFTER_S`` after every
flow run has submitted its first jobs the server is stopped, and ``OUTAGE_S`` later
started again on the same port and database.

It prints one JSON line: ``jobs``; ``faults`` (injected, as the simulator counted
them); ``api_outage_s`` (from the stop to the server answering again); ``terminal``
(jobs that ended in an outcome or a typed error); ``lost`` (jobs the simulator
created that the client neither knows nor announced in an error saying the job may
exist: 0); ``duplicate_submits`` (0); ``events_missing_after`` (job events the flows
emitted that the server does not hold at the end: 0);
``wall_s``. For the provider batches: ``batch_requests``; ``batch_outcomes`` (one per
request: equal); ``batch_items_without_outcome`` (0); ``batches_created`` and
``batch_duplicate_creates`` (creates beyond the first under one key: 0);
``batches_unclaimed`` (batches the simulator created that no outcome names: 0);
``batch_items_may_have_created`` (items of a create answered with a 5xx or cut off:
their errors name the pack's key; a re-run looks the batch up by it where the API
keeps one, OpenAI); ``batch_outcome_counts`` and ``batch_error_causes``.
Also ``reset_after_create_faults`` (a job created, then the connection
dropped before its id came back), ``submits_that_may_have_created`` (the submits
that ended in an error saying so, naming their idempotency key: the crash window no
provider's docs let us close) with their ``may_have_created_causes``, and
``submit_faults_a_client_cannot_tell`` (faults injected on submits after which no
client can know whether the job exists: dropped connections, timeouts, unreadable
bodies, 5xx): ``may_have_created_beyond_those_faults`` counts spurious ones (0).
``make soak`` runs it; it takes about 4 minutes here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx

from benchmarks.common import PrefectServerProcess, emit, simulator_process
from deployments.postgres import local_postgres
from prefect_pollers.testing.registry import (
    BATCH_PROVIDERS,
    PROVIDERS,
    provider_entry,
    varied_request,
)
from prefect_pollers.testing.simulator.config import every_fault_kind

SCALE = 0.05
JOBS_PER_PROVIDER = 200
CONCURRENCY = 20
OUTAGE_AFTER_S = 5.0
OUTAGE_S = 30.0
TIMEOUT_S = 2.0
BATCH_REQUESTS = 2000
PER_BATCH = 500
MAYBE_CREATED = "may have been created"


def simulator_config() -> dict[str, Any]:
    faults = every_fault_kind(
        {"submit": 0.01, "status": 0.01, "result": 0.03}, slow_s=3.0, reset_after_create=0.01
    )
    return {
        "time_scale": SCALE,
        "seed": 1123,
        "faults": [rule.model_dump() for rule in faults],
        "failure_rate": 0.05,
        "never_finish_rate": 0.01,
        "modelroute_cancel_rate": 0.02,
        "modelroute_expire_rate": 0.02,
        "generic_timeout_rate": 0.02,
        "rate_limit": 100_000,
        "twyn_config_duration": (60, 90),
        "twyn_simulation_duration": (120, 160),
        "twyn_analysis_duration": (60, 90),
        # Batches of 75-125 s: they run through the outage and end after it (a flow
        # run that ends while the API is down fails in Prefect's engine, not ours).
        "batch_duration": (1500, 2500),
        "batch_request_failure_rate": 0.02,
        "batch_expire_rate": 0.1,
        "batch_malformed_line_rate": 0.002,
    }


def leaves_submit_uncertain(kind: str, provider: str) -> bool:
    """Whether a fault of ``kind`` on a submit leaves the client unsure the job exists.

    A dropped connection, a timeout (``slow`` > ``TIMEOUT_S``), an unreadable body, or a
    5xx the provider's contract does not declare "not created"; unless the provider
    deduplicates on the idempotency header (the submit is then re-sent).
    """
    if kind == "burst_429":
        return False
    contract = provider_entry(provider).block("http://127.0.0.1", "sim-key").contract()
    if contract.dedup_header is not None:  # re-sent under the same key: resolved
        return False
    return not (kind.startswith("http_") and int(kind[5:]) in contract.submit_not_created_statuses)


def cause_of(error: str, provider: str) -> str:
    """An error's kind, without its details: "ReadTimeout", "returned an empty body"..."""
    cause = error.split(" [")[0].split(":")[0]
    return cause.removeprefix(f"{provider} ")[:60]


def recorded_events() -> list[str]:
    """The ids of the job events this process emits from now on (a list that grows)."""
    import prefect_pollers.events.jobs as events

    emitted: list[str] = []
    emit_event = events.emit_event

    def recording(**event: Any) -> Any:
        sent = emit_event(**event)
        if sent is not None:
            emitted.append(str(sent.id))
        return sent

    events.emit_event = recording  # type: ignore[assignment]
    return emitted


async def child(provider: str, jobs: int, base_url: str) -> dict[str, Any]:
    """One provider's batch in a flow run; returns its rows and the job events it emitted."""
    from prefect import flow

    from prefect_pollers import BatchItem, run_batch

    emitted = recorded_events()
    block = provider_entry(provider).block(
        base_url, "sim-key", policy_scale=SCALE, timeout_s=TIMEOUT_S
    )
    nonce = os.urandom(4).hex()
    items = [
        BatchItem(
            label=f"{provider}-{i}", key=f"soak-{nonce}-{i}", request=varied_request(provider, i)
        )
        for i in range(jobs)
    ]

    @flow(name=f"soak-{provider}")
    async def soak() -> list[Any]:
        return await run_batch(
            block, items, concurrency=CONCURRENCY, task_runs="batched", title=f"soak {provider}"
        )

    state = await soak(return_state=True)
    outcomes = await state.aresult(raise_on_failure=False)
    rows = [] if isinstance(outcomes, BaseException) else outcomes
    return {
        "provider": provider,
        "flow_run_id": str(state.state_details.flow_run_id),
        "state": state.type.value,
        "emitted": emitted,
        "rows": [
            {
                "outcome": row.outcome.value,
                "job_id": row.job_id,
                "maybe_created": MAYBE_CREATED in (row.error or ""),
                "cause": cause_of(row.error or "", provider),
            }
            for row in rows
        ],
    }


async def batch_child(provider: str, requests: int, base_url: str) -> dict[str, Any]:
    """One provider-batch API's requests in a flow run; its outcomes' counts and events."""
    from prefect import flow

    from prefect_pollers import BatchItem, run_provider_batch

    emitted = recorded_events()
    block = provider_entry(provider).block(
        base_url,
        "sim-key",
        policy_scale=SCALE,
        timeout_s=TIMEOUT_S,
        max_requests_per_batch=PER_BATCH,
    )
    nonce = os.urandom(4).hex()
    sample = provider_entry(provider).sample_request
    items = [
        BatchItem(
            label=f"{provider}-{i}",
            key=f"soak-{nonce}-{i}",
            request={**sample, "messages": [{"role": "user", "content": f"ticket {i}"}]},
        )
        for i in range(requests)
    ]

    @flow(name=f"soak-{provider}")
    async def soak() -> Any:
        return await run_provider_batch(block, items, title=f"soak {provider}")

    state = await soak(return_state=True)
    outcomes = await state.aresult(raise_on_failure=False)
    keys: set[str] = set()
    batch_ids: set[str] = set()
    counts = Counter[str]()
    causes = Counter[str]()
    lines = maybe_created = 0
    if not isinstance(outcomes, BaseException):
        for outcome in outcomes.read():
            lines += 1
            keys.add(outcome.key)
            counts[outcome.outcome.value] += 1
            maybe_created += MAYBE_CREATED in (outcome.error or "")
            if outcome.outcome.value == "error":
                causes[(outcome.error or "")[:160]] += 1
            if outcome.job_id:
                batch_ids.add(outcome.job_id)
    return {
        "provider": provider,
        "flow_run_id": str(state.state_details.flow_run_id),
        "state": state.type.value,
        "emitted": emitted,
        "requests": requests,
        "outcomes": lines,
        "without_outcome": len({item.key for item in items} - keys),
        "batch_ids": sorted(batch_ids),
        "counts": dict(counts),
        "maybe_created": maybe_created,
        "error_causes": dict(causes.most_common(5)),
    }


async def missing_events(api_url: str, results: list[dict[str, Any]]) -> int:
    """How many emitted job events the server holds neither as themselves nor resent."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    missing = 0
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            for result in results:
                job_events = EventFilter(
                    event=EventNameFilter(prefix=["prefect-pollers.job."]),
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{result['flow_run_id']}"]),
                )
                deadline = time.monotonic() + 30
                while True:
                    page = await client.read_events(filter=job_events, limit=50)
                    seen = list(page.events)
                    while page.next_page is not None:
                        page = await client.read_events_page(str(page.next_page))
                        seen += page.events
                    left = set(result["emitted"]) - {str(e.id) for e in seen}
                    if not left or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1)
                missing += len(left)
    return missing


def run() -> dict[str, Any]:
    with local_postgres(durable=False) as database_url:
        return _run(PrefectServerProcess(database_url))


def _run(server: PrefectServerProcess) -> dict[str, Any]:
    started = time.monotonic()
    try:
        server.start()
        with simulator_process(simulator_config()) as sim:
            env = {
                **os.environ,
                "PREFECT_API_URL": server.url,
                "DO_NOT_TRACK": "1",
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "PYTHONPATH": os.getcwd(),
                "PREFECT_LOCAL_STORAGE_PATH": os.path.join(server.home, "results"),
            }
            children = {
                entry.name: subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.soak",
                        "--child",
                        entry.name,
                        "--jobs",
                        str(BATCH_REQUESTS if entry in BATCH_PROVIDERS else JOBS_PER_PROVIDER),
                        "--base-url",
                        sim.base_url(entry.name),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=open(os.path.join(server.home, f"{entry.name}.log"), "w"),  # noqa: SIM115
                    text=True,
                )
                for entry in (*PROVIDERS, *BATCH_PROVIDERS)
            }
            job_children = [entry.name for entry in PROVIDERS]
            # The outage comes once every flow run is under way (jobs submitted).
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and any(
                sim.stats()[name]["submits"] < CONCURRENCY for name in job_children
            ):
                time.sleep(0.5)
            time.sleep(OUTAGE_AFTER_S)
            outage_began = time.monotonic()
            server.stop()
            time.sleep(OUTAGE_S)
            server.start()
            outage = time.monotonic() - outage_began
            results = []
            for name, process in children.items():
                out, _ = process.communicate(timeout=600)
                lines = [line for line in out.splitlines() if line.startswith("{")]
                if process.returncode != 0 or not lines:
                    with open(os.path.join(server.home, f"{name}.log")) as log:
                        tail = log.read()[-3000:]
                    raise RuntimeError(
                        f"the {name} flow process failed ({process.returncode}):\n{tail}"
                    )
                results.append(json.loads(lines[-1]))
            stats = sim.stats()
            created = {
                name: set(httpx.get(f"{sim.url}/_sim/jobs/{name}", timeout=30).json()["jobs"])
                for name in children
            }
        events_missing = asyncio.run(missing_events(server.url, results))
    finally:
        server.cleanup()
    batch_results = [r for r in results if r["provider"] not in job_children]
    results_of_jobs = [r for r in results if r["provider"] in job_children]
    jobs = terminal = lost = maybe_created = 0
    causes = Counter[str]()
    for result in results_of_jobs:
        rows = result["rows"]
        jobs += JOBS_PER_PROVIDER
        terminal += len(rows)
        known = {row["job_id"] for row in rows if row["job_id"]}
        announced = sum(row["maybe_created"] for row in rows)
        maybe_created += announced
        causes.update(row["cause"] for row in rows if row["maybe_created"])
        lost += max(0, len(created[result["provider"]] - known) - announced)
        lost += JOBS_PER_PROVIDER - len(rows)
    faults = Counter[str]()
    for provider_stats in stats.values():
        faults.update(provider_stats["faults_injected"])
    ambiguous = sum(
        n
        for name, provider_stats in stats.items()
        if name in job_children
        for kind, n in provider_stats["faults_on_submit"].items()
        if leaves_submit_uncertain(kind, name)
    )
    return {
        "jobs": jobs,
        "faults": sum(faults.values()),
        "fault_kinds": len(faults),
        "api_outage_s": round(outage, 1),
        "terminal": terminal,
        "lost": lost,
        "duplicate_submits": sum(s["duplicate_submits"] for s in stats.values()),
        "events_missing_after": events_missing,
        "reset_after_create_faults": faults["reset_after_create"],
        "submits_that_may_have_created": maybe_created,
        "may_have_created_causes": dict(causes.most_common()),
        "submit_faults_a_client_cannot_tell": ambiguous,
        "may_have_created_beyond_those_faults": max(0, maybe_created - ambiguous),
        **batch_figures(batch_results, stats, created),
        "flow_runs_completed": sum(r["state"] == "COMPLETED" for r in results),
        "wall_s": round(time.monotonic() - started, 1),
    }


def batch_figures(
    results: list[dict[str, Any]], stats: dict[str, Any], created: dict[str, set[str]]
) -> dict[str, Any]:
    """The provider batches' figures of the line (see the module)."""
    counts = Counter[str]()
    for result in results:
        counts.update(result["counts"])
    names = [result["provider"] for result in results]
    return {
        "batch_requests": sum(result["requests"] for result in results),
        "batch_outcomes": sum(result["outcomes"] for result in results),
        "batch_items_without_outcome": sum(result["without_outcome"] for result in results),
        "batches_created": sum(stats[name]["batches_created"] for name in names),
        "batch_duplicate_creates": sum(
            n - 1 for name in names for n in stats[name]["batches_by_key"].values() if n > 1
        ),
        "batches_unclaimed": sum(
            len(created[result["provider"]] - set(result["batch_ids"])) for result in results
        ),
        "batch_items_may_have_created": {
            result["provider"]: result["maybe_created"] for result in results
        },
        "batch_outcome_counts": dict(counts.most_common()),
        "batch_error_causes": {result["provider"]: result["error_causes"] for result in results},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=JOBS_PER_PROVIDER, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        batch = args.child in {entry.name for entry in BATCH_PROVIDERS}
        work = (batch_child if batch else child)(args.child, args.jobs, args.base_url)
        print(json.dumps(asyncio.run(work)), flush=True)
        return
    emit("soak", **run())


if __name__ == "__main__":
    main()
