"""The tests that failed in any of several runs of a lane, from their JUnit XML files.

``make flaky N=3 LANE=check`` runs a lane N times with ``--junitxml=.flaky/run-<i>.xml``
and then this script::

    python scripts/flaky_report.py .flaky/run-*.xml

It prints one line per test that failed or errored in at least one run (how many runs
it failed in, of how many it ran in), worst first, and exits 1 if there is any such test
or a run left no readable report or ran no test (a crashed or interrupted run), else 0.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def outcomes(report: Path) -> dict[str, str]:
    """Each test of one JUnit XML report and its outcome: passed, failed, error or skipped."""
    found: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            outcome = "failed"
        elif "error" in kinds:
            outcome = "error"
        elif "skipped" in kinds:
            outcome = "skipped"
        else:
            outcome = "passed"
        # A test that passed but errored in teardown appears twice: keep the worse.
        if found.get(name) not in ("failed", "error"):
            found[name] = outcome
    return found


def main(paths: list[str]) -> int:
    """Print the tests that failed in any run; 1 if there were any (or a report is missing)."""
    if not paths:
        print("usage: flaky_report.py RUN.xml [RUN.xml ...]", file=sys.stderr)
        return 2
    ran: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    unreadable = []
    for path in paths:
        try:
            results = outcomes(Path(path))
        except (OSError, ET.ParseError) as error:
            unreadable.append(f"{path}: {error}")
            continue
        if not results:
            unreadable.append(f"{path}: no test ran")
        for name, outcome in results.items():
            ran[name] += 1
            failed[name] += outcome in ("failed", "error")
    flaky = sorted((name for name in failed if failed[name]), key=lambda n: (-failed[n], n))
    print(f"=== {len(paths)} run(s), {len(ran)} tests, {len(flaky)} failed in some run")
    for name in flaky:
        always = " (every run)" if failed[name] == ran[name] else ""
        print(f"{failed[name]}/{ran[name]} failed  {name}{always}")
    for line in unreadable:
        print(f"no test results: {line}")
    return 1 if flaky or unreadable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
