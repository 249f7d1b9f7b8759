"""Sharded batches: a batch too big for one process, as child flow runs on a work pool.

A flow given a :class:`Sharding` and more than ``threshold`` items starts one flow
run of ``deployment`` per shard (``run_deployment``, linked as subflows) and waits
for them; each child runs the same flow over its :class:`Shard` of the items, in
batched mode, on whichever worker of the pool picks it up. Shards reference their
items by index range (a CSV path and a range, say), never by value: the server
refuses large parameters. Child runs are created with an idempotency key made from
the parent flow run and the shard, so a retried parent re-attaches to the same
children; their items' idempotency keys come from the parent, so a child run made
again re-attaches to its jobs. The parent keeps one progress artifact, the sum of
its children's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from prefect_pollers.batch.progress import BatchProgress


class Sharding(BaseModel):
    """How a big batch is split over child flow runs of a deployment.

    Attributes:
        deployment: ``flow-name/deployment-name`` of the children (the same flow).
        shards: How many child runs.
        threshold: Batches of more items than this are sharded; smaller ones run here.
        poll_interval_s: Seconds between two looks at the children.
    """

    deployment: str = Field(min_length=3, description="flow-name/deployment-name of the shards.")
    shards: int = Field(default=4, ge=1, description="Child flow runs.")
    threshold: int = Field(default=5_000, ge=1, description="Shard batches larger than this.")
    poll_interval_s: float = Field(default=5.0, gt=0, description="Seconds between looks.")

    def applies_to(self, items: int) -> bool:
        """Whether a batch of ``items`` items is sharded."""
        return items > self.threshold and self.shards > 1


class Shard(BaseModel):
    """One child's part of the batch: items ``start`` (included) to ``stop`` (excluded)."""

    index: int = Field(ge=0)
    count: int = Field(ge=1)
    start: int = Field(ge=0)
    stop: int = Field(ge=0)

    def take(self, items: list[Any]) -> list[Any]:
        """This shard's items of the whole batch's."""
        return items[self.start : self.stop]


class ShardOutcome(BaseModel):
    """What one child run ended with: its return value, or why there is none."""

    shard: Shard
    flow_run_id: str
    state: str
    result: Any = None
    error: str | None = None


def split(total: int, shards: int) -> list[Shard]:
    """``total`` items in ``shards`` contiguous ranges, as even as can be."""
    count = max(1, min(shards, total))
    base, extra = divmod(total, count)
    ranges, start = [], 0
    for index in range(count):
        stop = start + base + (1 if index < extra else 0)
        ranges.append(Shard(index=index, count=count, start=start, stop=stop))
        start = stop
    return ranges


async def run_shards(
    sharding: Sharding, total: int, parameters: dict[str, Any], *, title: str
) -> list[ShardOutcome]:
    """Run the children over ``total`` items and wait for them; see the module.

    Args:
        sharding: The deployment and the number of shards.
        total: Items in the whole batch.
        parameters: The children's parameters (``shard`` is added): small ones only.
        title: Names the children and the progress artifact.

    Returns:
        One outcome per shard, in order.

    Raises:
        ValueError: outside a flow run (the children need a parent to re-attach to).
    """
    parent = flow_run.get_id()
    if parent is None:
        raise ValueError("a sharded batch runs inside a flow run: its children re-attach to it")
    shards = split(total, sharding.shards)
    children: list[FlowRun] = []
    for shard in shards:
        children.append(
            await run_deployment(  # type: ignore[misc]
                sharding.deployment,
                parameters={**parameters, "shard": shard.model_dump()},
                idempotency_key=f"{parent}-shard-{shard.index}-of-{shard.count}",
                flow_run_name=f"{title} shard {shard.index + 1} of {shard.count}",
                timeout=0,
            )
        )
    progress = BatchProgress(title, total)
    await progress.start()
    async with get_client() as client:
        while True:
            children = [await client.read_flow_run(child.id) for child in children]
            done = await _children_done(client, children, shards)
            await progress.finished(max(0, done - progress.done))
            if all(child.state is not None and child.state.is_final() for child in children):
                break
            await asyncio.sleep(sharding.poll_interval_s)
    return [await _outcome(shard, child) for shard, child in zip(shards, children, strict=True)]


async def _children_done(client: Any, children: list[FlowRun], shards: list[Shard]) -> int:
    """Items the children report finished, from their progress artifacts."""
    done = 0
    for child, shard in zip(children, shards, strict=True):
        size = shard.stop - shard.start
        if child.state is not None and child.state.is_completed():
            done += size
            continue
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[child.id]),
                type=ArtifactFilterType(any_=["progress"]),
            ),
            limit=1,
        )
        if artifacts and isinstance(artifacts[0].data, (int, float)):
            done += int(size * float(artifacts[0].data) / 100)
    return done


async def _outcome(shard: Shard, child: FlowRun) -> ShardOutcome:
    state = child.state
    name = (state.name if state is not None else None) or "unknown"
    if state is None or not state.is_completed():
        message = state.message if state is not None and state.message else name
        return ShardOutcome(
            shard=shard, flow_run_id=str(child.id), state=name, error=f"shard run {name}: {message}"
        )
    try:
        result = await state.aresult()
    except Exception as exc:  # a result that cannot be read counts as the shard failing
        return ShardOutcome(
            shard=shard,
            flow_run_id=str(child.id),
            state=name,
            error=f"shard result unreadable: {exc}",
        )
    return ShardOutcome(shard=shard, flow_run_id=str(child.id), state=name, result=result)
