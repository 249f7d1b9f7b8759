"""Reproducible measurements; each benchmark prints one JSON line (``make bench``)."""

BENCHMARKS = (
    "poll_efficiency",
    "rate_limit",
    "shared_rate_limit",
    "overhead",
    "scale",
    "scale_out",
    "callbacks",
    "durable",
    "ledger",
    "provider_batch",
)
"""What ``make bench`` runs, in order (``make soak`` runs ``soak`` the same way)."""
