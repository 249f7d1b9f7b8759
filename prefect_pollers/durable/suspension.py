"""The hand-over's suspension, without the ERROR Prefect logs for it.

Prefect's async flow engine ends every run with ``Finished in state <state>`` on the
flow-run logger (``prefect.flow_runs``), at INFO when the state is Completed and at
ERROR for every other state, a suspension included (``AsyncFlowRunEngine``'s
``finally`` in ``prefect/flow_engine.py``, the same in Prefect 3.8 and 3.9; its sync
engine logs the line at INFO). A durable wait suspends every run it hands over, so
every healthy run would show a red ERROR in the UI.

:func:`suspend_for_poller` arms a :class:`SuspendedFinishAtInfo` filter on that logger
just before it suspends the run. The filter lowers one record to INFO: the engine's
``Finished in state Suspended(... type=PAUSED ...)`` of this flow run, logged at
ERROR. It touches nothing else: any other record, of this run or another, at any
level, passes unchanged, so a Failed or Crashed finish (``Finished in state
Failed(...)``), a crash, or an error this run logs keeps its ERROR. The filter removes
itself after that record, and is removed at once when the run does not suspend (the
suspension returned, or raised anything but Prefect's ``Pause``).
"""

from __future__ import annotations

import logging
from uuid import UUID

from prefect.exceptions import Pause
from prefect.flow_runs import asuspend_flow_run
from prefect.runtime import flow_run

ENGINE_LOGGER = "prefect.flow_runs"
"""The logger of Prefect's flow-run records, the engine's ``Finished in state`` line included."""
SUSPENDED_FINISH = "Finished in state Suspended("
"""How the engine's line starts for a suspended run (``str`` and ``repr`` of the state)."""


class SuspendedFinishAtInfo(logging.Filter):
    """Lowers the engine's ERROR ``Finished in state Suspended(...)`` of one run to INFO, once."""

    def __init__(self, flow_run_id: UUID | str) -> None:
        super().__init__()
        self.flow_run_id = str(flow_run_id)

    def matches(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is the engine's ERROR line for this run's suspension."""
        if record.levelno != logging.ERROR or record.name != ENGINE_LOGGER:
            return False
        if getattr(record, "flow_run_id", None) != self.flow_run_id:
            return False
        message = record.getMessage()
        return message.startswith(SUSPENDED_FINISH) and "type=PAUSED" in message

    def filter(self, record: logging.LogRecord) -> bool:
        """Lower the matching record to INFO in place (and disarm); pass every record."""
        if self.matches(record):
            record.levelno = logging.INFO
            record.levelname = logging.getLevelName(logging.INFO)
            self.disarm()
        return True  # never drops a record

    def arm(self) -> None:
        """Install on the engine's logger."""
        logging.getLogger(ENGINE_LOGGER).addFilter(self)

    def disarm(self) -> None:
        """Remove from the engine's logger (safe while the logger runs its filters)."""
        logger = logging.getLogger(ENGINE_LOGGER)
        # A new list, not ``removeFilter``: this may run inside the logger's loop over
        # its filters, which must not see its list change.
        logger.filters = [f for f in logger.filters if f is not self]


async def suspend_for_poller(key: str) -> None:
    """Suspend the current flow run with ``key`` and no timeout; its finish logged at INFO.

    Returns when Prefect does not suspend the run (the key was spent: it was resumed
    already). Prefect's ``Pause`` propagates, as Prefect needs, with the filter armed
    for the engine's finish line.
    """
    lowering = SuspendedFinishAtInfo(flow_run.get_id() or "")
    lowering.arm()
    try:
        await asuspend_flow_run(key=key, timeout=None)
    except Pause:
        raise  # suspended: the engine logs its finish after this; the filter waits for it
    except BaseException:
        lowering.disarm()
        raise
    lowering.disarm()  # not suspended: nothing to lower
