"""Best-effort reporting: artifacts, tables and events never fail the work they describe.

A report that cannot be made (the Prefect API is down, refuses it, times out) is
logged once per kind of report at WARNING, with no traceback; later failures of
the same kind go to DEBUG. The work goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect.logging import get_logger

LOGGER = get_logger("prefect_pollers.events.reporting")
_warned: set[str] = set()


def report_failed(what: str, error: Exception) -> None:
    """Log that ``what`` could not be reported: WARNING the first time, DEBUG after."""
    first = what not in _warned
    _warned.add(what)
    (LOGGER.warning if first else LOGGER.debug)(
        "could not update %s (%s: %s); the work goes on without it%s",
        what,
        type(error).__name__,
        error,
        " (further failures of it are logged at DEBUG)" if first else "",
    )


@contextlib.contextmanager
def best_effort(what: str) -> Iterator[None]:
    """Run a report; an exception in it is logged (:func:`report_failed`), not raised."""
    try:
        yield
    except Exception as exc:  # reporting never fails the work it reports on
        report_failed(what, exc)
