"""The webhook receiver's replay memory, in the ledger: per provider, restart-safe, shared.

A verified callback is processed only if its delivery id is claimed here first: one
``INSERT ... ON CONFLICT DO NOTHING`` on ``(provider, delivery id)``. Claimed: it is
new; not claimed: a replay (the receiver answers 409). Rows live in the ledger
(SQLite by default, PostgreSQL across machines), so a restarted receiver and every
replica behind one URL refuse what any of them accepted. Rows are pruned once they
are past ``keep_until``, when a replay could no longer pass verification anyway.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from prefect_pollers.ledger.schema import webhook_seen
from prefect_pollers.ledger.store import current_ledger

PRUNE_EVERY_S = 60.0
"""The least time between two prunings of expired rows by one receiver."""


class LedgerReplays:
    """Claims delivery ids in the ledger.

    Args:
        url: The ledger's async SQLAlchemy URL (None: ``PREFECT_POLLERS_LEDGER_URL``,
            else SQLite under ``PREFECT_HOME``).
    """

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._pruned_at = float("-inf")

    async def claim(self, provider: str, delivery_id: str, keep_until: float) -> bool:
        """Claim ``delivery_id`` of ``provider``: True if it is new, False if seen before.

        Args:
            provider: The provider's short name (ids of different providers never clash).
            delivery_id: The callback's delivery id.
            keep_until: Epoch seconds until which the claim must be kept.
        """
        ledger = current_ledger(self._url)
        now = time.time()
        async with await ledger._begin() as connection:
            if now - self._pruned_at >= PRUNE_EVERY_S:
                self._pruned_at = now
                await connection.execute(
                    sa.delete(webhook_seen).where(webhook_seen.c.keep_until < now)
                )
            inserted = await connection.execute(
                ledger._insert_ignore(webhook_seen)
                .values(
                    provider=provider, webhook_id=delivery_id, seen_at=now, keep_until=keep_until
                )
                .returning(webhook_seen.c.webhook_id)
            )
            return inserted.first() is not None
