"""Durable waits: the wait leaves the flow-run process, and the poller service ends it.

- :class:`DurableWait` (``run_batch(durable=DurableWait())``): the flow hands the jobs
  still running to the poller service and suspends.
- :class:`PollerService` (``prefect-pollers poller``): waits for every handed-over job
  and resumes the flow runs.
- :func:`ensure_resume_automation`: the automation that resumes a run on the poller's
  event (the poller creates it when it starts).
"""

from prefect_pollers.durable.poller import PollerService
from prefect_pollers.durable.resume import ensure_resume_automation
from prefect_pollers.durable.wait import DurableWait

__all__ = ["DurableWait", "PollerService", "ensure_resume_automation"]
