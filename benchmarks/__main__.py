"""``python -m benchmarks``: every benchmark in turn, one JSON line each (``make bench``).

Each JSON line a benchmark prints is also appended, as printed, to the results file
(``benchmarks/results.jsonl``; ``BENCH_RESULTS=path`` writes elsewhere, ``BENCH_RESULTS=``
keeps no record), which ``scripts/bench_plots.py`` turns into the docs' plots. Running a
benchmark's module directly (``python -m benchmarks.rate_limit``) records nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import BENCHMARKS

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results.jsonl"


def results_path() -> Path | None:
    """Where the JSON lines go: ``$BENCH_RESULTS``, the default file, or None if set empty."""
    configured = os.environ.get("BENCH_RESULTS")
    if configured is None:
        return DEFAULT_RESULTS
    return Path(configured) if configured else None


def is_result(line: str) -> bool:
    """Whether ``line`` is a benchmark's JSON line (an object naming its benchmark)."""
    if not line.startswith("{"):
        return False
    try:
        figures = json.loads(line)
    except ValueError:
        return False
    return isinstance(figures, dict) and "benchmark" in figures


def run(name: str, results: Path | None) -> int:
    """Run ``benchmarks.<name>`` in its own process, echo its output, record its JSON lines."""
    with subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.{name}"], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if results is not None and is_result(line.strip()):
                results.parent.mkdir(parents=True, exist_ok=True)
                with results.open("a", encoding="utf-8") as record:
                    record.write(line.strip() + "\n")
    return process.returncode


def main() -> int:
    """Run each benchmark in its own process; returns the number that failed."""
    wanted = sys.argv[1:] or list(BENCHMARKS)
    results = results_path()
    failed = 0
    for name in wanted:
        failed += run(name, results) != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
