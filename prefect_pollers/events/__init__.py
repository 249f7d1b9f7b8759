"""What the package reports to Prefect, none of which may fail the work it reports on.

- :mod:`~prefect_pollers.events.jobs`: a job's events (submitted, each change of state,
  stuck, callbacks), related to its flow run.
- :mod:`~prefect_pollers.events.outbox`: each job event kept until the server holds it.
- :mod:`~prefect_pollers.events.outside_run`: events sent with no run's related resources.
- :mod:`~prefect_pollers.events.reporting`: best effort for every report.
- :mod:`~prefect_pollers.events.tables`: result tables as artifacts.
"""
