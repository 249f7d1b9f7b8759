"""Durable batches in the ledger: handovers and outcomes as rows (JSON documents).

The ledger knows nothing of their models (:mod:`prefect_pollers.durable.records` does):
it stores one handover per flow run and batch, and one outcome per item key, each
written in one transaction. Outcomes are only ever added (the first one of a key
stays), never rewritten, so a crash between two writes loses nothing already written
and a late writer changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prefect_pollers.ledger.schema import handovers, outcomes
from prefect_pollers.ledger.store import CHUNK, Ledger


class Closed:
    """Why a handover is closed: the poller is done with it."""

    RESUMED = "resumed"
    """Every outcome recorded; the run was resumed."""
    CANCELLED = "cancelled"
    """The run was cancelled; its pending jobs were cancelled."""
    DROPPED = "dropped"
    """The run ended, or left its suspension, otherwise."""


def _insert(ledger: Ledger, table: sa.Table) -> Any:
    if ledger.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


async def put_handover(
    ledger: Ledger, flow_run_id: str, batch_id: str, handover: Mapping[str, Any]
) -> None:
    """Record (or replace) a batch's handover, open."""
    now = time.time()
    document = json.dumps(handover)
    statement = _insert(ledger, handovers).values(
        flow_run_id=flow_run_id,
        batch_id=batch_id,
        handover=document,
        created_at=now,
        updated_at=now,
    )
    statement = statement.on_conflict_do_update(
        index_elements=[handovers.c.flow_run_id, handovers.c.batch_id],
        set_={"handover": document, "updated_at": now, "closed_at": None, "closed_as": None},
    )
    async with await ledger._begin() as connection:
        await connection.execute(statement)


async def handover_rows(
    ledger: Ledger, flow_run_id: str, batch_id: str | None = None
) -> dict[str, dict[str, Any]]:
    """A flow run's handovers by batch id (of ``batch_id`` only, if given), oldest first."""
    query = sa.select(handovers.c.batch_id, handovers.c.handover).where(
        handovers.c.flow_run_id == flow_run_id
    )
    if batch_id is not None:
        query = query.where(handovers.c.batch_id == batch_id)
    async with await ledger._begin() as connection:
        result = await connection.execute(query.order_by(handovers.c.created_at))
        return {row.batch_id: json.loads(row.handover) for row in result}


async def open_handover_runs(ledger: Ledger) -> set[str]:
    """The flow runs with a handover the poller is not done with."""
    async with await ledger._begin() as connection:
        result = await connection.execute(
            sa.select(handovers.c.flow_run_id).where(handovers.c.closed_at.is_(None)).distinct()
        )
        return {row.flow_run_id for row in result}


async def close_handovers(ledger: Ledger, flow_run_id: str, closed_as: str) -> None:
    """Close a flow run's open handovers (the poller is done with them)."""
    now = time.time()
    async with await ledger._begin() as connection:
        await connection.execute(
            sa.update(handovers)
            .where(handovers.c.flow_run_id == flow_run_id, handovers.c.closed_at.is_(None))
            .values(closed_at=now, closed_as=closed_as, updated_at=now)
        )


async def add_outcomes(
    ledger: Ledger, flow_run_id: str, batch_id: str, found: Mapping[str, Mapping[str, Any]]
) -> None:
    """Add outcomes by item key, in one transaction; a key already recorded keeps its own."""
    if found:
        async with await ledger._begin() as connection:
            await _add_outcomes(ledger, connection, flow_run_id, batch_id, found)


async def _add_outcomes(
    ledger: Ledger,
    connection: AsyncConnection,
    flow_run_id: str,
    batch_id: str,
    found: Mapping[str, Mapping[str, Any]],
) -> None:
    now = time.time()
    values = [
        {
            "flow_run_id": flow_run_id,
            "batch_id": batch_id,
            "key": key,
            "outcome": json.dumps(outcome),
            "recorded_at": now,
        }
        for key, outcome in found.items()
    ]
    statement = _insert(ledger, outcomes).on_conflict_do_nothing()
    for start in range(0, len(values), CHUNK):
        await connection.execute(statement, values[start : start + CHUNK])


async def outcome_rows(
    ledger: Ledger, flow_run_id: str, batch_id: str, keys: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The recorded outcomes of a batch by item key (of ``keys`` only, if given)."""
    query = sa.select(outcomes.c.key, outcomes.c.outcome).where(
        outcomes.c.flow_run_id == flow_run_id, outcomes.c.batch_id == batch_id
    )
    async with await ledger._begin() as connection:
        if keys is None:
            result = list(await connection.execute(query))
        else:
            result = []
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start : start + CHUNK]
                result.extend(await connection.execute(query.where(outcomes.c.key.in_(chunk))))
        return {row.key: json.loads(row.outcome) for row in result}


async def import_handover(
    ledger: Ledger,
    flow_run_id: str,
    batch_id: str,
    handover: Mapping[str, Any],
    found: Mapping[str, Mapping[str, Any]],
) -> None:
    """Copy a handover and its outcomes recorded elsewhere (an earlier version) into rows.

    One transaction; rows that exist already stay as they are.
    """
    now = time.time()
    async with await ledger._begin() as connection:
        await connection.execute(
            _insert(ledger, handovers)
            .values(
                flow_run_id=flow_run_id,
                batch_id=batch_id,
                handover=json.dumps(handover),
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )
        await _add_outcomes(ledger, connection, flow_run_id, batch_id, found)
