"""Limits that hold across processes and machines, in Prefect's global concurrency limits.

- :mod:`~prefect_pollers.limits.shared`: jobs in flight and requests per span, leased in
  chunks.
"""
