"""Running the package in production: what acts on flow runs from outside them.

- :mod:`~prefect_pollers.ops.cancellation`: the hook that cancels a cancelled run's jobs.
- :mod:`~prefect_pollers.ops.recovery`: crash recovery automations for deployment runs.
- :mod:`~prefect_pollers.ops.automations`: saving automations by name, idempotently.
- :mod:`~prefect_pollers.ops.serving`: serving an ASGI app on loopback (simulator, receiver).
"""
