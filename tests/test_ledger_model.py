"""A model-based test of the ledger: random re-runs, crashes and lost answers, one create a key.

Hypothesis drives random sequences of batch runs (subsets, supersets, reorders, two
live copies at once) against one SQLite ledger, with faults drawn per item: the
provider refuses (nothing created), the answer is lost after the create, or the
process dies mid-send (its session is abandoned and its heartbeat goes stale).
Whatever the sequence: the provider creates each key's job at most once (it does
not deduplicate), every item of a run gets exactly one outcome, and no finished
session still holds a reservation.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from prefect_pollers import ExonaCredentials
from prefect_pollers.engine import JobRef, ProviderUnavailableError, TransientRequestError
from prefect_pollers.ledger import Ledger, LedgerSubmitter, SubmitState
from prefect_pollers.ledger.schema import owners, submits

CREDENTIALS = ExonaCredentials(api_key="k", base_url="http://127.0.0.1:9/v1")
KEYS = [f"k{i}" for i in range(6)]
FAULTS = st.sampled_from(["ok", "ok", "ok", "refused", "lost_answer", "crash"])


class LedgerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.ledger = Ledger(f"sqlite+aiosqlite:///{Path(self.dir.name) / 'model.db'}")
        self.creates: dict[str, int] = {}
        self.ids = itertools.count()
        self.finished_tokens: list[str] = []
        self.loop.run_until_complete(self.ledger.upgrade())

    def teardown(self) -> None:
        self.loop.run_until_complete(self.ledger.aclose())
        self.loop.close()
        self.dir.cleanup()

    def sender(self, key: str, fault: str, crashed: set[str], progress: asyncio.Event):
        async def send() -> JobRef:
            if fault == "refused":
                raise ProviderUnavailableError("503", provider="exona", idempotency_key=key)
            self.creates[key] = self.creates.get(key, 0) + 1
            if fault == "lost_answer":
                raise TransientRequestError(
                    "answer lost", provider="exona", idempotency_key=key, may_have_created=True
                )
            if fault == "crash":
                crashed.add(key)
                progress.set()
                await asyncio.sleep(3600)  # the process dies here, after the create
            return JobRef(
                provider="exona",
                job_id=f"job-{next(self.ids)}",
                submitted_at=datetime.now(timezone.utc),
                idempotency_key=key,
            )

        return send

    async def one_run(self, keys: list[str], faults: list[str]) -> list[Any]:
        crashed: set[str] = set()
        progress = asyncio.Event()
        submitter = LedgerSubmitter(CREDENTIALS, flow_run_id="run", ledger=self.ledger)
        await submitter.__aenter__()

        async def one(key: str, fault: str) -> Any:
            try:
                send = self.sender(key, fault, crashed, progress)
                return (await submitter.submit(key, {"k": key}, send))[0]
            except Exception as exc:
                return exc

        tasks = [asyncio.ensure_future(one(k, f)) for k, f in zip(keys, faults, strict=True)]
        if "crash" in faults:
            # Until every item has ended or stalls in its send (a re-attached key never sends).
            while not all(t.done() or k in crashed for k, t in zip(keys, tasks, strict=True)):
                progress.clear()
                woken = asyncio.ensure_future(progress.wait())
                running = [t for t in tasks if not t.done()]
                await asyncio.wait([woken, *running], return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
            # The process dies: nothing more runs, its heartbeat stops and goes stale.
            for task in tasks:
                task.cancel()
            for background in (submitter._heart, submitter._writer):
                if background is not None:
                    background.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            async with self.ledger.engine.begin() as connection:
                await connection.execute(
                    sa.update(owners)
                    .where(owners.c.token == submitter.owner.token)
                    .values(heartbeat_at=0.0)
                )
            return ["crashed"] * len(keys)
        results = await asyncio.gather(*tasks)
        await submitter.__aexit__(None, None, None)
        self.finished_tokens.append(submitter.owner.token)
        return list(results)

    @rule(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=6, unique=True),
        faults=st.lists(FAULTS, min_size=6, max_size=6),
    )
    def run_batch(self, keys: list[str], faults: list[str]) -> None:
        results = self.loop.run_until_complete(self.one_run(keys, faults[: len(keys)]))
        assert len(results) == len(keys)  # one outcome per item

    @rule(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=6, unique=True))
    def two_live_copies(self, keys: list[str]) -> None:
        ok = ["ok"] * len(keys)

        async def both() -> list[list[Any]]:
            return list(
                await asyncio.gather(self.one_run(keys, ok), self.one_run(list(reversed(keys)), ok))
            )

        first, second = self.loop.run_until_complete(both())
        for key, ref in zip(keys, first, strict=True):
            other = second[len(keys) - 1 - keys.index(key)]
            if isinstance(ref, JobRef) and isinstance(other, JobRef):
                assert ref == other  # both copies got the one job

    @invariant()
    def each_key_created_at_most_once(self) -> None:
        assert all(n <= 1 for n in self.creates.values()), self.creates

    @invariant()
    def no_finished_session_holds_a_reservation(self) -> None:
        async def held() -> int:
            async with self.ledger.engine.begin() as connection:
                found = await connection.scalar(
                    sa.select(sa.func.count())
                    .select_from(submits)
                    .where(
                        submits.c.state == SubmitState.RESERVED,
                        submits.c.owner.in_(self.finished_tokens or [""]),
                    )
                )
            return int(found or 0)

        assert self.loop.run_until_complete(held()) == 0


LedgerModel.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerModel = LedgerModel.TestCase
