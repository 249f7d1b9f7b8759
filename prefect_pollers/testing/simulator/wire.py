"""How numbers and instants are written into headers and bodies."""

from __future__ import annotations

import math
from datetime import datetime, timezone


def format_seconds(seconds: float) -> str:
    """Write a duration for a header: an integer when whole, else a decimal (e.g. "0.1").

    Values are rounded up to the millisecond, so a client that waits exactly what it
    is told never comes back too early.
    """
    millis = max(0, math.ceil(round(seconds * 1000, 6)))
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis / 1000:.3f}".rstrip("0")


def iso_timestamp(epoch_seconds: float) -> str:
    """Write an instant as ISO 8601 UTC with milliseconds, e.g. "2024-03-20T08:50:00.000Z"."""
    instant = datetime.fromtimestamp(epoch_seconds, timezone.utc)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
