"""What a flow calls for one job: Prefect tasks, Prefect's job interface, the observed wait.

- :mod:`~prefect_pollers.tasks.submit_wait`: ``submit_job``, ``wait_for_job``, ``run_job``.
- :mod:`~prefect_pollers.tasks.job_block`: ``PollerJob``, Prefect's ``JobBlock`` interface.
- :mod:`~prefect_pollers.tasks.observed`: the one wait of flows and the poller (events,
  cancellation, callbacks).
"""
