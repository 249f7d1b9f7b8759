"""The ledger's tables, its schema version, and the migrations that reach it.

Timestamps are epoch seconds (floats) from the wall clock: rows are read by other
processes and machines, so they never come from a test's virtual clock.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

SCHEMA_VERSION = 1
"""The schema this version of prefect-pollers reads and writes."""

metadata = sa.MetaData()

schema_version = sa.Table(
    "pollers_schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

owners = sa.Table(
    "pollers_owners",
    metadata,
    sa.Column("token", sa.String(36), primary_key=True),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
)
"""Who holds reservations: one row per submitting session (a batch, a submit task)."""

submits = sa.Table(
    "pollers_submits",
    metadata,
    sa.Column("endpoint", sa.String(160), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("request_digest", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(36), nullable=False),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("job_id", sa.Text),
    sa.Column("ref", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_pollers_submits_updated_at", "updated_at"),
    sa.Index("ix_pollers_submits_key", "key"),
)
"""One row per provider endpoint and idempotency key: the truth about its submit."""

handovers = sa.Table(
    "pollers_handovers",
    metadata,
    sa.Column("flow_run_id", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("handover", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("closed_at", sa.Float),
    sa.Column("closed_as", sa.String(16)),
    sa.Index("ix_pollers_handovers_closed_at", "closed_at"),
)
"""One row per durable batch of a flow run: its handover (JSON); open until the poller is
done with it (``closed_as``: resumed, cancelled, dropped)."""

outcomes = sa.Table(
    "pollers_outcomes",
    metadata,
    sa.Column("flow_run_id", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
)
"""One row per handed-over item's outcome (JSON), written once: the first one stays."""

leases = sa.Table(
    "pollers_leases",
    metadata,
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("holder", sa.String(200)),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("acquired_at", sa.Float),
)
"""One row per poller shard: which poller holds it, and its last heartbeat."""

lease_holders = sa.Table(
    "pollers_lease_holders",
    metadata,
    sa.Column("holder", sa.String(200), primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)
"""One row per running poller (its heartbeat): how many share the shards."""

webhook_seen = sa.Table(
    "pollers_webhook_seen",
    metadata,
    sa.Column("provider", sa.String(64), primary_key=True),
    sa.Column("webhook_id", sa.Text, primary_key=True),
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("keep_until", sa.Float, nullable=False),
    sa.Index("ix_pollers_webhook_seen_keep_until", "keep_until"),
)
"""The webhook receiver's replay memory: each callback's delivery id, per provider,
kept until a replay of it could no longer pass verification (shared by replicas)."""

pack_items = sa.Table(
    "pollers_pack_items",
    metadata,
    sa.Column("endpoint", sa.String(160), primary_key=True),
    sa.Column("item_key", sa.Text, primary_key=True),
    sa.Column("pack_key", sa.Text, nullable=False),
    sa.Column("item_digest", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_pollers_pack_items_pack", "endpoint", "pack_key"),
)
"""Which provider batch (its idempotency key, a row of ``submits``) carries each item:
an item is claimed by one pack at most, so no request is ever sent in two batches."""

pack_uploads = sa.Table(
    "pollers_pack_uploads",
    metadata,
    sa.Column("endpoint", sa.String(160), primary_key=True),
    sa.Column("pack_key", sa.Text, primary_key=True),
    sa.Column("file_id", sa.Text, nullable=False),
    sa.Column("uploaded_at", sa.Float, nullable=False),
)
"""The uploaded input file of a provider batch not created yet: reused by the next
attempt instead of uploaded again, forgotten once the batch exists."""

MIGRATIONS: dict[int, list[str]] = {}
"""SQL that takes the schema from version ``n - 1`` to ``n`` (none yet past 1)."""


class LedgerSchemaError(RuntimeError):
    """The ledger's schema is newer than this version of prefect-pollers reads."""


async def upgrade(connection: AsyncConnection) -> int:
    """Create the tables or migrate them to :data:`SCHEMA_VERSION`, in this transaction.

    Returns:
        The version the ledger was at before (0 for a new ledger).

    Raises:
        LedgerSchemaError: the ledger was written by a newer prefect-pollers.
    """
    if connection.dialect.name == "postgresql":  # one migrator at a time, across machines
        await connection.execute(sa.text("SELECT pg_advisory_xact_lock(7150117)"))
    tables = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    before = 0
    if schema_version.name in tables:
        found = await connection.scalar(sa.select(sa.func.max(schema_version.c.version)))
        before = int(found or 0)
    if before > SCHEMA_VERSION:
        raise LedgerSchemaError(
            f"the ledger's schema is version {before}, newer than this prefect-pollers reads "
            f"({SCHEMA_VERSION}): upgrade prefect-pollers on this machine"
        )
    # Tables are only ever added within a version: create the missing ones (checkfirst).
    await connection.run_sync(metadata.create_all)
    if before == SCHEMA_VERSION:
        return before
    for version in range(max(before, 1) + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS.get(version, []):
            await connection.execute(sa.text(statement))
    await connection.execute(
        sa.insert(schema_version).values(version=SCHEMA_VERSION, applied_at=time.time())
    )
    return before
