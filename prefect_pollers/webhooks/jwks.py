"""The Ed25519 public keys of a JWKS URL: fetched, cached, and fetched again on rotation.

:class:`JwksKeys` keeps the keys of one URL for a TTL. A signature that verifies under
none of them may mean the provider rotated its key: :meth:`JwksKeys.refresh` fetches
again, but at most once per cooldown, so forged callbacks (which never verify) cannot
make the receiver hammer the provider's JWKS URL. Keys are read with the maintained
``cryptography`` package; only ``OKP``/``Ed25519`` keys are kept.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_log = logging.getLogger("prefect_pollers.webhooks")

JWKS_TIMEOUT_S = 10.0
"""The most seconds one JWKS fetch may take."""


class JwksKeys:
    """The Ed25519 keys published at one JWKS URL.

    Args:
        url: The JWKS URL.
        ttl_s: How long fetched keys are used before they are fetched again.
        cooldown_s: The least time between two fetches (rotation or not).
        transport: The httpx transport (tests pass their own; None: the network).
        now: Monotonic seconds (tests pass their own).

    Attributes:
        fetches: How many times the JWKS was requested (counted once each ended).
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float,
        cooldown_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._transport = transport
        self._now = now
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def keys(self) -> list[Ed25519PublicKey]:
        """The cached keys; fetched first when there are none yet or they are too old.

        :attr:`fetches` right after it returns says which fetch they came from: pass
        it to :meth:`refresh` when none of them verifies.
        """
        fetched = self._fetched_at
        if fetched is None or self._now() - fetched >= self._ttl_s:
            await self._fetch(seen=self.fetches)
        return self._keys

    async def refresh(self, seen: int) -> bool:
        """Fetch again, unless the keys changed since fetch ``seen`` or within the cooldown.

        Returns:
            Whether there are keys newer than fetch ``seen`` now.
        """
        return await self._fetch(seen=seen)

    async def _fetch(self, *, seen: int) -> bool:
        async with self._lock:
            if self.fetches != seen:  # another caller fetched since
                return True
            last = self._fetched_at
            if last is not None and self._now() - last < self._cooldown_s:
                return False
            self._fetched_at = self._now()
            try:
                async with httpx.AsyncClient(
                    transport=self._transport, timeout=JWKS_TIMEOUT_S
                ) as client:
                    response = await client.get(self.url)
                    response.raise_for_status()
                    self._keys = ed25519_keys(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                # The keys held stay in use; the next try waits out the cooldown.
                _log.warning("the JWKS at %s could not be read: %s", self.url, type(exc).__name__)
                return False
            finally:
                self.fetches += 1  # after the keys changed: readers pair them right
            return True


def ed25519_keys(jwks: object) -> list[Ed25519PublicKey]:
    """The Ed25519 public keys of a JWKS document (others, and broken ones, skipped)."""
    entries = jwks.get("keys") if isinstance(jwks, dict) else None
    keys = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP":
            continue
        if entry.get("crv") != "Ed25519" or not isinstance(entry.get("x"), str):
            continue
        try:
            raw = base64.urlsafe_b64decode(entry["x"] + "=" * (-len(entry["x"]) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (binascii.Error, ValueError):
            continue
    return keys
