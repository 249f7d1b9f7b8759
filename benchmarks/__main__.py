"""``python -m benchmarks``: every benchmark in turn, one JSON line each (``make bench``)."""

from __future__ import annotations

import subprocess
import sys

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
)


def main() -> int:
    """Run each benchmark in its own process; returns the number that failed."""
    wanted = sys.argv[1:] or list(BENCHMARKS)
    failed = 0
    for name in wanted:
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=False)
        failed += done.returncode != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
