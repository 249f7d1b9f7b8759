"""Which provider batch carries each item, and the uploads of batches not created yet.

A provider batch's own submit goes through the ledger like any job (its idempotency
key is a row of ``submits``); this adds what a batch of requests needs besides:

- **Claims**: each item is claimed by one pack at most, all of a pack's items in one
  transaction or none. A copy of the run that packed the same items differently (a
  changed item set, another copy running at once) cannot claim an item already in
  a pack: it packs again around it, so no request is ever sent in two batches.
- **Uploads**: the input file uploaded for a pack whose create has not happened is
  recorded before the create, so the next attempt (a retry, a crashed worker's
  re-run) reuses it instead of uploading again; it is forgotten once the batch exists.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from prefect_pollers.ledger.schema import pack_items, pack_uploads
from prefect_pollers.ledger.store import CHUNK, Ledger


@dataclass(frozen=True)
class Claim:
    """An item's place in a pack: the pack's key and the item's request digest."""

    pack_key: str
    item_digest: str


class _Taken(Exception):
    """Some item of a pack was already claimed by another: roll the claim back."""


class PackLedger:
    """Claims and uploads of provider batches in one ledger, for one provider endpoint.

    Args:
        ledger: The ledger.
        endpoint: The provider endpoint (see ``ledger.submitter.endpoint_of``).
    """

    def __init__(self, ledger: Ledger, endpoint: str) -> None:
        self.ledger = ledger
        self.endpoint = endpoint

    async def claims(self, keys: Sequence[str]) -> dict[str, Claim]:
        """The claims of those of ``keys`` some pack holds."""
        found: dict[str, Claim] = {}
        async with await self.ledger._begin() as connection:
            for start in range(0, len(keys), CHUNK):
                rows = await connection.execute(
                    sa.select(pack_items).where(
                        pack_items.c.endpoint == self.endpoint,
                        pack_items.c.item_key.in_(keys[start : start + CHUNK]),
                    )
                )
                for row in rows:
                    found[row.item_key] = Claim(row.pack_key, row.item_digest)
        return found

    async def members(self, pack_key: str) -> list[str]:
        """Every item key ``pack_key`` holds."""
        async with await self.ledger._begin() as connection:
            rows = await connection.execute(
                sa.select(pack_items.c.item_key).where(
                    pack_items.c.endpoint == self.endpoint, pack_items.c.pack_key == pack_key
                )
            )
            return [row.item_key for row in rows]

    async def claim(self, pack_key: str, items: Sequence[tuple[str, str]]) -> bool:
        """Claim every ``(item key, digest)`` for ``pack_key``, all or none.

        Returns:
            True if the pack holds every item now (claimed here or before), False if
            another pack holds one of them (nothing is claimed then).
        """
        now = time.time()
        try:
            async with await self.ledger._begin() as connection:
                for start in range(0, len(items), CHUNK):
                    await connection.execute(
                        self.ledger._insert_ignore(pack_items),
                        [
                            {
                                "endpoint": self.endpoint,
                                "item_key": key,
                                "pack_key": pack_key,
                                "item_digest": digest,
                                "created_at": now,
                            }
                            for key, digest in items[start : start + CHUNK]
                        ],
                    )
                held = await connection.scalar(
                    sa.select(sa.func.count())
                    .select_from(pack_items)
                    .where(
                        pack_items.c.endpoint == self.endpoint, pack_items.c.pack_key == pack_key
                    )
                )
                if held != len(items):
                    raise _Taken
        except _Taken:
            return False
        return True

    async def release(self, pack_key: str) -> None:
        """Give back the items of ``pack_key``, a pack that surely created no batch."""
        async with await self.ledger._begin() as connection:
            await connection.execute(
                sa.delete(pack_items).where(
                    pack_items.c.endpoint == self.endpoint, pack_items.c.pack_key == pack_key
                )
            )

    async def upload_of(self, pack_key: str) -> str | None:
        """The input file uploaded for ``pack_key`` and not used by a batch yet."""
        async with await self.ledger._begin() as connection:
            found = await connection.scalar(
                sa.select(pack_uploads.c.file_id).where(
                    pack_uploads.c.endpoint == self.endpoint, pack_uploads.c.pack_key == pack_key
                )
            )
        return None if found is None else str(found)

    async def record_upload(self, pack_key: str, file_id: str) -> None:
        """Record the input file of ``pack_key`` before its create is sent."""
        async with await self.ledger._begin() as connection:
            await connection.execute(
                sa.delete(pack_uploads).where(
                    pack_uploads.c.endpoint == self.endpoint, pack_uploads.c.pack_key == pack_key
                )
            )
            await connection.execute(
                sa.insert(pack_uploads).values(
                    endpoint=self.endpoint,
                    pack_key=pack_key,
                    file_id=file_id,
                    uploaded_at=time.time(),
                )
            )

    async def forget_upload(self, pack_key: str) -> None:
        """Forget the input file of ``pack_key`` (its batch exists, or it was deleted)."""
        async with await self.ledger._begin() as connection:
            await connection.execute(
                sa.delete(pack_uploads).where(
                    pack_uploads.c.endpoint == self.endpoint, pack_uploads.c.pack_key == pack_key
                )
            )
