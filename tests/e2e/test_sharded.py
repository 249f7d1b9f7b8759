"""End to end: a sharded batch over two process workers, under a shared jobs-in-flight cap.

The ``batch-scans/sharded-portfolio`` deployment's run (on the stack's worker) starts
two runs of ``batch-scans/shard`` on the ``shards`` queue, where two more workers
take one run at a time each; the credentials block caps the jobs in flight across
both shards' processes (a Prefect global concurrency limit). The parent completes
with one row per company in one table; run again with the same idempotency prefix,
its new shards re-attach to every scan (0 resubmits).
"""

from __future__ import annotations

import json
import signal
import sys
from uuid import UUID

import pytest
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import StateType

from prefect_pollers.testing.registry import provider_entry
from prefect_pollers.testing.simulator import SimulatorConfig
from tests.e2e.conftest import POOL, TIME_SCALE, Stack
from tests.e2e.test_durable import run_deployment, until_state
from tests.processes import PREFECT, Process, api_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("e2e-stack")]

PARENT = "batch-scans/sharded-portfolio"
COMPANIES = 20
CAP = 6
BLOCK = "exona-shared"
WORKER_LABEL = "prefect.worker.name"  # the label a worker gives each flow run it submits


def save_capped_block(stack: Stack) -> None:
    """An Exona block on the simulator whose jobs in flight are capped across processes."""
    base_url = stack.simulator_url + provider_entry("exona").simulator_prefix
    code = (
        "from prefect_pollers import ExonaCredentials\n"
        "from prefect_pollers.limits.shared import SharedLimits\n"
        f"ExonaCredentials(api_key='sim-key', base_url={base_url!r},"
        f" policy_scale={TIME_SCALE}, shared_limits=SharedLimits(jobs_in_flight={CAP},"
        " name='e2e-exona')).save("
        f"{BLOCK!r}, overwrite=True)\n"
    )
    stack.run([sys.executable, "-c", code])


async def test_a_sharded_batch_uses_both_workers_under_the_shared_cap_and_re_attaches(
    stack: Stack,
) -> None:
    save_capped_block(stack)
    shard_workers = [
        Process(
            f"shard-worker-{index}",
            [
                *(*PREFECT, "worker", "start", "--pool", POOL, "--type", "process"),
                *("-q", "shards", "--limit", "1", "--name", f"shard-worker-{index}"),
            ],
            stack.env,
            stack.workdir,
        )
        for index in range(2)
    ]
    state = stack.simulator_state
    # Scans of 3-4.4 s, 10 per shard at once but 6 in flight in all: the cap binds. (Not
    # longer: the Exona guide's deadline is 300 s, 6 s here, which a 300 s scan reaches
    # under load.)
    state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11, exona_duration=(150, 220))
    state.reset()
    prefix = "sharded-e2e"
    params = {"credentials": BLOCK, "max_age_days": None, "idempotency_prefix": prefix}
    try:
        parent = run_deployment(stack, PARENT, **params)
        done = await until_state(stack, parent, "Completed", timeout=180)
        assert done.state_type == StateType.COMPLETED, (
            f"{done.state}\n{stack.worker.tail() if stack.worker else ''}\n"
            + "\n".join(worker.tail() for worker in shard_workers)
        )
        async with api_client(stack.api_url) as client:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
                )
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[parent]))
            )
        assert len(children) == 2
        assert {child.state_type for child in children} == {StateType.COMPLETED}
        # Each shard worker ran one shard: both were used. A worker labels each run it
        # submits with its name (state read from the API: a worker's log may name a run
        # that another worker took, e.g. when it lost the race to submit it).
        ran_by = sorted(str(child.labels.get(WORKER_LABEL)) for child in children)
        assert ran_by == [worker.name for worker in shard_workers], ran_by

        by_type = {artifact.type: artifact for artifact in artifacts}
        assert by_type["progress"].data == 100.0
        table = by_type["table"]
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert len(rows) == COMPANIES  # one row per company, in one table
        status = {row["company"]: row["status"] for row in rows}
        assert status.pop("Ghost Holdings") == "failed", rows
        assert set(status.values()) == {"succeeded"}, rows

        exona = stack.simulator_stats()["exona"]
        assert exona["submits"] == COMPANIES and exona["duplicate_submits"] == 0
        assert 1 < exona["max_jobs_in_flight"] <= CAP, exona["max_jobs_in_flight"]

        # Run again: new parent, new shards, the same scans (found in the shards' journals).
        again = run_deployment(stack, PARENT, **params)
        done = await until_state(stack, again, "Completed", timeout=120)
        assert done.state_type == StateType.COMPLETED, str(done.state)
        exona = stack.simulator_stats()["exona"]
        assert exona["submits"] == COMPANIES and exona["duplicate_submits"] == 0
        assert isinstance(again, UUID)
    finally:
        state.config = SimulatorConfig(time_scale=TIME_SCALE, seed=11)
        for worker in shard_workers:
            worker.stop(signal.SIGTERM, 5)
