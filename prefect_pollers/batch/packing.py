"""Packing requests into provider batches within an API's limits (pure, no I/O).

Requests go into packs in their order, a new pack starting whenever the next request
would take the current one over its request count or its bytes. The same requests
and limits always give the same packs, so a re-run that computes them again names
the same provider batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sized:
    """One request to pack: its key and the bytes of its line (newline included)."""

    key: str
    size: int


@dataclass(frozen=True)
class Pack:
    """The requests of one provider batch.

    Attributes:
        keys: The item keys, in order.
        size: The bytes of its input (every line with its newline).
    """

    keys: tuple[str, ...]
    size: int

    def digest(self) -> str:
        """What names the pack: a digest of its keys (order included)."""
        return hashlib.sha256("\n".join(self.keys).encode()).hexdigest()[:24]


def pack(requests: Sequence[Sized], *, max_requests: int, max_bytes: int) -> list[Pack]:
    """The packs of ``requests``: each within ``max_requests`` and ``max_bytes``.

    Raises:
        ValueError: naming the request, when one alone is over ``max_bytes`` (refuse
            such items before packing), or when a limit is below 1.
    """
    if max_requests < 1 or max_bytes < 1:
        raise ValueError(f"limits must be at least 1, got {max_requests=}, {max_bytes=}")
    packs: list[Pack] = []
    keys: list[str] = []
    size = 0
    for request in requests:
        if request.size > max_bytes:
            raise ValueError(
                f"request {request.key!r} takes {request.size} bytes, over the batch limit "
                f"of {max_bytes}"
            )
        if keys and (len(keys) == max_requests or size + request.size > max_bytes):
            packs.append(Pack(tuple(keys), size))
            keys, size = [], 0
        keys.append(request.key)
        size += request.size
    if keys:
        packs.append(Pack(tuple(keys), size))
    return packs
