"""Reserve, then submit: each idempotency key creates at most one job, whoever asks.

A :class:`LedgerSubmitter` is one session of submits (a batch, or one ``submit_job``
task). For each key it reserves the key in the ledger *before* sending, bound to the
request's digest, then records the job's ref. Writes are grouped: every reservation
and ref queued while the previous write ran goes in the next transaction (group
commit), so thousands of submits cost tens of transactions, and a ref is in the
ledger before its wait starts.

What a key's row says decides what happens:

- free: reserved by this session and sent;
- submitted: the recorded job is returned (nothing is sent), if the digest matches;
- another request's digest: :class:`KeyReuseError`, nothing sent;
- reserved by a live session (another copy of the same run): wait for its answer;
- reserved by a session that is over, or uncertain: that submit may have created
  the job. Where the provider deduplicates on the idempotency header, the key is
  taken over and sent again with the same key; otherwise
  :class:`SubmitUncertainError`, nothing sent.

A submit that surely created nothing gives its key back; one that may have created
the job marks it uncertain. Keys reserved but never sent are given back at exit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from prefect.results import ResultStore

from prefect_pollers.engine import JobRef, PollerError
from prefect_pollers.ledger.errors import KeyReuseError, SubmitUncertainError
from prefect_pollers.ledger.idempotency import request_digest
from prefect_pollers.ledger.legacy import journal_refs, recorded_ref
from prefect_pollers.ledger.store import (
    OWNER_HEARTBEAT_S,
    Ledger,
    Owner,
    SubmitRow,
    SubmitState,
    current_ledger,
)
from prefect_pollers.providers.base import JobApiCredentials

WAIT_FOR_OWNER_S = 0.5
"""Seconds between two looks at a key another live session is submitting."""
WRITE_ATTEMPTS = 4
"""Tries of one grouped write before its submits see the error."""

_log = logging.getLogger("prefect_pollers.ledger")


def endpoint_of(credentials: JobApiCredentials[Any]) -> str:
    """The provider endpoint a key belongs to: the provider and a digest of the base URL."""
    digest = hashlib.sha256(credentials.base_url.encode()).hexdigest()[:16]
    return f"{credentials.provider}:{digest}"


def provider_deduplicates(credentials: JobApiCredentials[Any]) -> bool:
    """Whether the provider creates one job per idempotency header, however often sent."""
    return credentials.contract().dedup_header is not None


@dataclass
class _Write:
    kind: str
    key: str
    value: Any = None
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class LedgerSubmitter:
    """Submits under idempotency keys, each at most once; see the module.

    Use it as ``async with LedgerSubmitter(...) as submitter``.

    Args:
        credentials: The provider's credentials block.
        flow_run_id: The flow run the submits are for (recorded with the reservation).
        ledger: The ledger (the configured one by default).
        store: Where version 0.1 recorded refs (read to re-attach); None reads none.
        batch_keys: The batch's item keys, in order, to find 0.1's journal pages.
    """

    def __init__(
        self,
        credentials: JobApiCredentials[Any],
        *,
        flow_run_id: str | None,
        ledger: Ledger | None = None,
        store: ResultStore | None = None,
        batch_keys: Sequence[str] | None = None,
    ) -> None:
        self.credentials = credentials
        self.provider = credentials.provider
        self.endpoint = endpoint_of(credentials)
        self.owner = Owner(token=str(uuid.uuid4()), flow_run_id=flow_run_id)
        self.ledger = ledger
        self.store = store
        self.batch_keys = batch_keys
        self.dedup = provider_deduplicates(credentials)
        self.created = 0
        """Jobs this session created."""
        self.reattached = 0
        """Keys whose recorded job this session returned instead of submitting."""
        self._queue: list[_Write] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._heart: asyncio.Task[None] | None = None
        self._reserved: set[str] = set()
        self._sending: set[str] = set()
        self._legacy: dict[str, JobRef] = {}
        self._liveness: dict[str, tuple[float, asyncio.Future[bool]]] = {}  # token -> look

    async def __aenter__(self) -> LedgerSubmitter:
        if self.ledger is None:
            self.ledger = current_ledger()
        if self.store is not None and self.batch_keys:
            self._legacy = await journal_refs(self.store, self.credentials, self.batch_keys)
        self._writer = asyncio.create_task(self._write_forever())
        self._heart = asyncio.create_task(self._beat_forever())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.shield(self._settle())

    async def _settle(self) -> None:
        """Give back keys never sent, mark those sent without an answer, end the session."""
        assert self.ledger is not None
        if self._heart is not None:
            self._heart.cancel()
        for key in sorted(self._sending):
            self._enqueue("uncertain", key, "the submitting session ended before the answer")
        for key in sorted(self._reserved - self._sending):
            self._enqueue("release", key)
        self._reserved.clear()
        self._sending.clear()
        await self._drain()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        try:
            await self.ledger.finish(self.owner)
        except Exception as exc:  # its heartbeat stops: it is over within the TTL
            _log.warning("could not record the end of a ledger session: %s", exc)

    # -- the protocol ---------------------------------------------------------------------
    async def submit(
        self,
        key: str,
        request: Any,
        send: Callable[[], Awaitable[JobRef]],
        *,
        lookup: Callable[[], Awaitable[JobRef | None]] | None = None,
    ) -> tuple[JobRef, bool]:
        """The job of ``key``: recorded earlier, or sent now by ``send`` and recorded.

        Args:
            key: The idempotency key.
            request: The validated request (its digest binds the key).
            send: Submits the request to the provider (called at most once here).
            lookup: Asks the provider for the job created under ``key`` (None: it has
                none), where it can tell: an earlier submit that may have created the
                job is then looked up rather than given up on.

        Returns:
            The job's ref, and whether this call created it.

        Raises:
            KeyReuseError: the key names another request; nothing was sent.
            SubmitUncertainError: an earlier submit under the key may have created
                the job; nothing was sent.
            PollerError: ``send`` failed (the key is given back, or marked uncertain
                when the job may exist).
        """
        assert self.ledger is not None, "use LedgerSubmitter as an async context manager"
        digest = request_digest(request)
        while True:
            row: SubmitRow = await self._enqueue("reserve", key, digest)
            if row.request_digest != digest:
                raise KeyReuseError(
                    f"idempotency key {key!r} was used for another request (digest "
                    f"{row.request_digest}); this request's digest is {digest}",
                    provider=self.provider,
                    idempotency_key=key,
                )
            if row.state == SubmitState.SUBMITTED and row.ref is not None:
                self.reattached += 1
                return row.ref, False
            if row.owner == self.owner.token and row.state == SubmitState.RESERVED:
                self._reserved.add(key)
                break
            if row.state == SubmitState.RESERVED and await self._is_live(row.owner):
                await asyncio.sleep(WAIT_FOR_OWNER_S)  # another live copy is submitting it
                continue
            if await self._moved_on(key, row):
                continue  # its session recorded or gave it back as it ended
            if not self.dedup and lookup is None:
                raise SubmitUncertainError(
                    f"an earlier submit under idempotency key {key!r} ended without an answer "
                    f"({row.error or 'its session stopped while sending'}): the job may exist",
                    provider=self.provider,
                    idempotency_key=key,
                )
            if not await self.ledger.take_over(self.endpoint, key, row.owner, self.owner):
                continue
            self._reserved.add(key)
            if lookup is None:
                break  # the provider deduplicates: sent again under the same key
            found = await self._look_up(key, lookup)
            if found is not None:
                return found, False
            break  # the provider has no job under the key: it is sent
        legacy = self._legacy.get(key)
        if legacy is None and self.store is not None:
            legacy = await recorded_ref(self.store, self.credentials, key)
        if legacy is not None:
            await self._enqueue("record", key, legacy)
            self._reserved.discard(key)
            self.reattached += 1
            return legacy, False
        return await self._send(key, send), True

    async def _look_up(
        self, key: str, lookup: Callable[[], Awaitable[JobRef | None]]
    ) -> JobRef | None:
        """The job the provider holds under ``key`` (recorded), or None; ``key`` is reserved."""
        try:
            found = await lookup()
        except PollerError as exc:
            self._reserved.discard(key)
            await self._enqueue("uncertain", key, f"looking the job up failed: {exc.message}")
            raise
        if found is None:
            return None
        self._reserved.discard(key)
        await self._enqueue("record", key, found)
        self.reattached += 1
        return found

    async def _is_live(self, token: str) -> bool:
        """Whether session ``token`` is running: one look per wait, shared by all its keys."""
        assert self.ledger is not None
        now = time.monotonic()
        seen = self._liveness.get(token)
        if seen is None or now - seen[0] >= WAIT_FOR_OWNER_S:
            look = asyncio.ensure_future(self.ledger.owner_is_live(token))
            seen = self._liveness[token] = (now, look)
        try:
            return await asyncio.shield(seen[1])
        except Exception as exc:  # assume it runs (nothing is sent); the next wait looks again
            _log.debug("could not tell whether ledger session %s runs: %s", token, exc)
            return True

    async def _moved_on(self, key: str, row: SubmitRow) -> bool:
        """Whether ``key``'s row changed since ``row`` was read (its session just ended)."""
        assert self.ledger is not None
        now = (await self.ledger.rows(self.endpoint, [key])).get(key)
        return now is None or (now.state, now.owner) != (row.state, row.owner)

    async def _send(self, key: str, send: Callable[[], Awaitable[JobRef]]) -> JobRef:
        self._sending.add(key)
        try:
            ref = await send()
        except PollerError as exc:
            self._sending.discard(key)
            self._reserved.discard(key)
            if exc.may_have_created:
                await self._enqueue("uncertain", key, exc.message)
            else:
                await self._enqueue("release", key)
            raise
        except BaseException:
            # Sent or not, nobody can tell: __aexit__ (or the next write) marks it uncertain.
            raise
        self._sending.discard(key)
        self._reserved.discard(key)
        self.created += 1
        try:
            await self._enqueue("record", key, ref)
        except Exception as exc:  # the job exists: wait for it; a re-run will see it uncertain
            _log.warning(
                "job %s (key %r) could not be recorded in the ledger: %s", ref.job_id, key, exc
            )
        return ref

    # -- grouped writes ------------------------------------------------------------------
    def _enqueue(self, kind: str, key: str, value: Any = None) -> asyncio.Future[Any]:
        write = _Write(kind, key, value)
        self._queue.append(write)
        self._wake.set()
        return write.done

    async def _drain(self) -> None:
        while self._queue:
            await self._write_once()

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write_once()

    async def _write_once(self) -> None:
        writes, self._queue = self._queue, []
        if not writes:
            return
        by_kind: dict[str, list[_Write]] = {}
        for write in writes:
            by_kind.setdefault(write.kind, []).append(write)
        for kind, group in by_kind.items():
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                try:
                    results = await self._apply(kind, group)
                except Exception as exc:
                    if attempt < WRITE_ATTEMPTS:
                        await asyncio.sleep(0.1 * 4 ** (attempt - 1))
                        continue
                    for write in group:
                        if not write.done.done():
                            write.done.set_exception(exc)
                    break
                for write in group:
                    if not write.done.done():
                        write.done.set_result(results.get(write.key))
                break

    async def _apply(self, kind: str, group: list[_Write]) -> dict[str, Any]:
        assert self.ledger is not None
        if kind == "reserve":
            entries = list({w.key: w.value for w in group}.items())
            return await self.ledger.reserve(self.endpoint, self.owner, entries)
        if kind == "record":
            await self.ledger.record(self.endpoint, self.owner, [(w.key, w.value) for w in group])
        elif kind == "release":
            await self.ledger.release(self.endpoint, self.owner, [w.key for w in group])
        elif kind == "uncertain":
            await self.ledger.mark_uncertain(
                self.endpoint, self.owner, [(w.key, str(w.value)) for w in group]
            )
        return {}

    async def _beat_forever(self) -> None:
        assert self.ledger is not None
        while True:
            await asyncio.sleep(OWNER_HEARTBEAT_S)
            try:
                await self.ledger.heartbeat(self.owner)
            except Exception as exc:  # the next beat tries again
                _log.warning("ledger heartbeat failed: %s", exc)
