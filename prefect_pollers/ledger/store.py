"""The ledger's store: reservations, refs and their owners as rows (SQLite or PostgreSQL).

Every write is one transaction: a crash between two writes loses nothing already
written, and no reader sees half of one. On SQLite (WAL mode) a write transaction
begins ``IMMEDIATE`` so that two processes never both read, then collide on write.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from prefect_pollers.engine import JobRef
from prefect_pollers.ledger.schema import (
    handovers,
    outcomes,
    owners,
    pack_items,
    pack_uploads,
    submits,
    upgrade,
)
from prefect_pollers.ledger.settings import ledger_url

OWNER_HEARTBEAT_S = 10.0
"""Seconds between two heartbeats of a session that holds reservations."""
OWNER_TTL_S = 90.0
"""A session whose last heartbeat is older than this is over (its process is gone)."""
CHUNK = 500
"""Keys per statement (SQLite binds at most 32,766 parameters)."""
BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's write to end."""


class SubmitState:
    """The states of a submit row."""

    RESERVED = "reserved"
    """Reserved by its owner, whose request is on its way (or was, if it is over)."""
    SUBMITTED = "submitted"
    """The provider created the job: the row holds its ref."""
    UNCERTAIN = "uncertain"
    """A submit failed in a way that may have created the job (see ``error``)."""


@dataclass(frozen=True)
class Owner:
    """A session that reserves keys: a batch, or one submit task.

    Attributes:
        token: Unique to this session (two live copies of one flow run differ).
        flow_run_id: The flow run it submits for, if any.
    """

    token: str
    flow_run_id: str | None


@dataclass(frozen=True)
class SubmitRow:
    """What the ledger knows of one key's submit."""

    endpoint: str
    key: str
    request_digest: str
    state: str
    owner: str
    flow_run_id: str | None
    job_id: str | None
    ref: JobRef | None
    error: str | None
    created_at: float
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON data (the CLI prints it)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["ref"] = self.ref.model_dump(mode="json") if self.ref else None
        return data


def _row(found: Any) -> SubmitRow:
    ref = JobRef.model_validate_json(found.ref) if found.ref else None
    return SubmitRow(
        endpoint=found.endpoint,
        key=found.key,
        request_digest=found.request_digest,
        state=found.state,
        owner=found.owner,
        flow_run_id=found.flow_run_id,
        job_id=found.job_id,
        ref=ref,
        error=found.error,
        created_at=found.created_at,
        updated_at=found.updated_at,
    )


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


class Ledger:
    """One ledger database, through one SQLAlchemy async engine.

    Args:
        url: An async SQLAlchemy URL (see :func:`~prefect_pollers.ledger.settings.ledger_url`).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.engine: AsyncEngine = create_async_engine(url, **_engine_options(self.dialect))
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        self._upgraded = False
        self._upgrade_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Ledger({self.engine.url.render_as_string(hide_password=True)!r})"

    async def aclose(self) -> None:
        """Close the engine's connections."""
        await self.engine.dispose()

    async def upgrade(self) -> int:
        """Create or migrate the schema (once per instance); the version found before."""
        async with self._upgrade_lock:
            async with self.engine.begin() as connection:
                before = await upgrade(connection)
            self._upgraded = True
            return before

    async def _begin(self) -> Any:
        if not self._upgraded:
            await self.upgrade()
        return self.engine.begin()

    # -- reservations --------------------------------------------------------------------
    async def reserve(
        self, endpoint: str, owner: Owner, entries: Sequence[tuple[str, str]]
    ) -> dict[str, SubmitRow]:
        """Reserve each free key for ``owner`` and return every key's row, in one transaction.

        Args:
            endpoint: The provider endpoint the keys belong to.
            owner: Who reserves.
            entries: ``(key, request digest)`` pairs.

        Returns:
            Each key's row: reserved by ``owner`` where it was free, else as found.
        """
        now = time.time()
        async with await self._begin() as connection:
            await self._beat(connection, owner, now)
            found: dict[str, SubmitRow] = {}
            for chunk in _chunks(entries):
                values = [
                    {
                        "endpoint": endpoint,
                        "key": key,
                        "request_digest": digest,
                        "state": SubmitState.RESERVED,
                        "owner": owner.token,
                        "flow_run_id": owner.flow_run_id,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for key, digest in chunk
                ]
                await connection.execute(self._insert_ignore(submits), values)
                found.update(await self._select(connection, endpoint, [key for key, _ in chunk]))
            return found

    async def record(self, endpoint: str, owner: Owner, refs: Sequence[tuple[str, JobRef]]) -> None:
        """Record the refs of ``owner``'s submits (one transaction, however many)."""
        now = time.time()
        statement = (
            sa.update(submits)
            .where(
                submits.c.endpoint == endpoint,
                submits.c.key == sa.bindparam("b_key"),
                submits.c.owner == owner.token,
            )
            .values(
                state=SubmitState.SUBMITTED,
                job_id=sa.bindparam("b_job_id"),
                ref=sa.bindparam("b_ref"),
                error=None,
                updated_at=now,
            )
        )
        values = [
            {"b_key": key, "b_job_id": ref.job_id, "b_ref": ref.model_dump_json()}
            for key, ref in refs
        ]
        async with await self._begin() as connection:
            for chunk in _chunks(values):
                await connection.execute(statement, list(chunk))

    async def release(self, endpoint: str, owner: Owner, keys: Sequence[str]) -> None:
        """Give back ``owner``'s reservations of ``keys`` (their submits surely created nothing)."""
        async with await self._begin() as connection:
            for chunk in _chunks(keys):
                await connection.execute(
                    sa.delete(submits).where(
                        submits.c.endpoint == endpoint,
                        submits.c.key.in_(chunk),
                        submits.c.owner == owner.token,
                        submits.c.state == SubmitState.RESERVED,
                    )
                )

    async def mark_uncertain(
        self, endpoint: str, owner: Owner, errors: Sequence[tuple[str, str]]
    ) -> None:
        """Mark ``owner``'s reservations whose submit may have created the job."""
        now = time.time()
        statement = (
            sa.update(submits)
            .where(
                submits.c.endpoint == endpoint,
                submits.c.key == sa.bindparam("b_key"),
                submits.c.owner == owner.token,
                submits.c.state == SubmitState.RESERVED,
            )
            .values(state=SubmitState.UNCERTAIN, error=sa.bindparam("b_error"), updated_at=now)
        )
        async with await self._begin() as connection:
            for chunk in _chunks([{"b_key": k, "b_error": e} for k, e in errors]):
                await connection.execute(statement, list(chunk))

    async def take_over(self, endpoint: str, key: str, previous: str, owner: Owner) -> bool:
        """Move a reservation from an owner that is over to ``owner``; False if it moved on."""
        async with await self._begin() as connection:
            await self._beat(connection, owner, time.time())
            result = await connection.execute(
                sa.update(submits)
                .where(
                    submits.c.endpoint == endpoint,
                    submits.c.key == key,
                    submits.c.owner == previous,
                    submits.c.state.in_([SubmitState.RESERVED, SubmitState.UNCERTAIN]),
                )
                .values(
                    owner=owner.token,
                    flow_run_id=owner.flow_run_id,
                    state=SubmitState.RESERVED,
                    updated_at=time.time(),
                )
            )
            return bool(result.rowcount)

    async def import_refs(
        self, endpoint: str, owner: Owner, refs: Sequence[tuple[str, str, JobRef]]
    ) -> None:
        """Record refs found in an earlier version's records: ``(key, digest, ref)``."""
        now = time.time()
        values = [
            {
                "endpoint": endpoint,
                "key": key,
                "request_digest": digest,
                "state": SubmitState.SUBMITTED,
                "owner": owner.token,
                "flow_run_id": owner.flow_run_id,
                "job_id": ref.job_id,
                "ref": ref.model_dump_json(),
                "created_at": ref.submitted_at.timestamp(),
                "updated_at": now,
            }
            for key, digest, ref in refs
        ]
        async with await self._begin() as connection:
            for chunk in _chunks(values):
                await connection.execute(self._insert_ignore(submits), list(chunk))

    # -- reads ---------------------------------------------------------------------------
    async def rows(self, endpoint: str, keys: Sequence[str]) -> dict[str, SubmitRow]:
        """The rows of ``keys`` at ``endpoint`` that exist."""
        async with await self._begin() as connection:
            found: dict[str, SubmitRow] = {}
            for chunk in _chunks(keys):
                found.update(await self._select(connection, endpoint, chunk))
            return found

    async def rows_named(self, key: str) -> list[SubmitRow]:
        """Every row of ``key``, at any endpoint (``prefect-pollers ledger show``)."""
        async with await self._begin() as connection:
            result = await connection.execute(sa.select(submits).where(submits.c.key == key))
            return [_row(found) for found in result]

    async def owner_is_live(self, token: str) -> bool:
        """Whether the session ``token`` is still running (heartbeat within the TTL)."""
        async with await self._begin() as connection:
            found = (
                await connection.execute(sa.select(owners).where(owners.c.token == token))
            ).first()
        return (
            found is not None
            and found.finished_at is None
            and found.heartbeat_at > time.time() - OWNER_TTL_S
        )

    async def count(self) -> int:
        """How many submit rows the ledger holds."""
        async with await self._begin() as connection:
            return int(
                await connection.scalar(sa.select(sa.func.count()).select_from(submits)) or 0
            )

    # -- owners --------------------------------------------------------------------------
    async def heartbeat(self, owner: Owner) -> None:
        """Say that ``owner`` is still running."""
        async with await self._begin() as connection:
            await self._beat(connection, owner, time.time())

    async def finish(self, owner: Owner) -> None:
        """Say that ``owner`` is over (its reservations were all settled)."""
        now = time.time()
        async with await self._begin() as connection:
            await connection.execute(
                sa.update(owners)
                .where(owners.c.token == owner.token)
                .values(finished_at=now, heartbeat_at=now)
            )

    # -- operations ----------------------------------------------------------------------
    async def release_key(self, key: str, endpoint: str | None = None) -> int:
        """Delete the uncertain or abandoned rows of ``key``; how many went.

        For an operator who checked at the provider that no job exists (the next
        submit under the key then creates it).
        """
        condition = sa.and_(submits.c.key == key, submits.c.state != SubmitState.SUBMITTED)
        if endpoint is not None:
            condition = sa.and_(condition, submits.c.endpoint == endpoint)
        async with await self._begin() as connection:
            result = await connection.execute(sa.delete(submits).where(condition))
            return int(result.rowcount or 0)

    async def prune(self, older_than_s: float) -> dict[str, int]:
        """Delete rows untouched for ``older_than_s`` that no live session holds.

        Submits and their sessions; durable handovers closed that long ago (the
        poller resumed, cancelled or dropped their run) and their outcomes; the items
        and uploads of provider batches whose submit is gone.

        Returns:
            How many rows of each kind were deleted.
        """
        cutoff = time.time() - older_than_s
        live = sa.select(owners.c.token).where(
            owners.c.finished_at.is_(None), owners.c.heartbeat_at > time.time() - OWNER_TTL_S
        )
        async with await self._begin() as connection:
            gone = await connection.execute(
                sa.delete(submits).where(
                    submits.c.updated_at < cutoff, submits.c.owner.not_in(live)
                )
            )
            owners_gone = await connection.execute(
                sa.delete(owners).where(
                    owners.c.heartbeat_at < cutoff,
                    owners.c.token.not_in(sa.select(submits.c.owner).distinct()),
                )
            )
            closed = sa.select(handovers.c.flow_run_id, handovers.c.batch_id).where(
                handovers.c.closed_at < cutoff
            )
            outcomes_gone = await connection.execute(
                sa.delete(outcomes).where(
                    sa.tuple_(outcomes.c.flow_run_id, outcomes.c.batch_id).in_(closed)
                )
            )
            handovers_gone = await connection.execute(
                sa.delete(handovers).where(handovers.c.closed_at < cutoff)
            )
            kept = sa.select(submits.c.endpoint, submits.c.key)
            packs_gone = await connection.execute(
                sa.delete(pack_items).where(
                    pack_items.c.created_at < cutoff,
                    sa.tuple_(pack_items.c.endpoint, pack_items.c.pack_key).not_in(kept),
                )
            )
            await connection.execute(
                sa.delete(pack_uploads).where(
                    pack_uploads.c.uploaded_at < cutoff,
                    sa.tuple_(pack_uploads.c.endpoint, pack_uploads.c.pack_key).not_in(kept),
                )
            )
        return {
            "submits": int(gone.rowcount or 0),
            "owners": int(owners_gone.rowcount or 0),
            "handovers": int(handovers_gone.rowcount or 0),
            "outcomes": int(outcomes_gone.rowcount or 0),
            "pack_items": int(packs_gone.rowcount or 0),
        }

    # -- helpers -------------------------------------------------------------------------
    def _insert_ignore(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()

    async def _beat(self, connection: AsyncConnection, owner: Owner, now: float) -> None:
        await connection.execute(
            self._insert_ignore(owners),
            {
                "token": owner.token,
                "flow_run_id": owner.flow_run_id,
                "started_at": now,
                "heartbeat_at": now,
            },
        )
        await connection.execute(
            sa.update(owners).where(owners.c.token == owner.token).values(heartbeat_at=now)
        )

    async def _select(
        self, connection: AsyncConnection, endpoint: str, keys: Sequence[str]
    ) -> dict[str, SubmitRow]:
        result = await connection.execute(
            sa.select(submits).where(submits.c.endpoint == endpoint, submits.c.key.in_(keys))
        )
        return {found.key: _row(found) for found in result}


def _engine_options(dialect: str) -> dict[str, Any]:
    # No pool: a transaction opens its connection and closes it. aiosqlite's connection
    # threads are not daemons (a pooled one would keep the process from exiting), and
    # an asyncpg connection belongs to one event loop (Prefect runs sync flows on loops
    # of their own). The ledger's writes are batched, so connections are few.
    options: dict[str, Any] = {"poolclass": NullPool}
    if dialect == "sqlite":
        options["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
    return options


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL mode (readers never block the writer) and ``BEGIN IMMEDIATE`` transactions."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's begin event says BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# url -> event loop -> ledger: an async engine's connections belong to the loop they
# were opened on.
_ledgers: dict[str, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Ledger]] = {}


def current_ledger(url: str | None = None) -> Ledger:
    """The ledger at ``url`` (the setting by default) for the running event loop."""
    url = url or ledger_url()
    per_loop = _ledgers.setdefault(url, weakref.WeakKeyDictionary())
    loop = asyncio.get_running_loop()
    ledger = per_loop.get(loop)
    if ledger is None:
        ledger = per_loop[loop] = Ledger(url)
    return ledger


def dumps_row(row: SubmitRow) -> str:
    """A row as one line of JSON."""
    return json.dumps(row.as_dict(), sort_keys=True)
