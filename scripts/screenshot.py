"""Screenshot a finished batch-scans flow run in the Prefect UI with headless Chromium.

Against a running Prefect server (``make ui``) on which a ``batch-scans`` flow run has
completed, this opens the run's page in the server's V2 UI (``/v2``, which honours the
``tab`` query parameter) on its Artifacts tab, under the run's task-run graph, and
saves a PNG::

    PREFECT_API_URL=http://127.0.0.1:4200/api python scripts/screenshot.py \
        [--flow-run-id ID] [--output docs/assets/flow-run.png]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings

DEFAULT_API_URL = "http://127.0.0.1:4200/api"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "assets" / "flow-run.png"
FLOW_NAME = "batch-scans"
CHROMIUM_TIMEOUT_S = 120
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1200",
    "--virtual-time-budget=15000",
)


async def latest_completed_run(api_url: str) -> UUID:
    """The id of the most recently finished, completed ``batch-scans`` flow run.

    Raises:
        SystemExit: if the server has no such run.
    """
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.COMPLETED])
                    )
                ),
                sort=FlowRunSort.END_TIME_DESC,
                limit=1,
            )
    if not runs:
        raise SystemExit(
            f"no completed {FLOW_NAME} flow run on {api_url}: run one first, e.g. "
            "`prefect deployment run 'batch-scans/nightly-portfolio-rescan'`"
        )
    return runs[0].id


def find_chromium() -> str:
    """The Chromium executable (``/usr/bin/chromium`` on Debian).

    Raises:
        SystemExit: if none is installed.
    """
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("Chromium not found: `apt-get install -y chromium` (Debian)")


def screenshot(url: str, output: Path, chromium: str) -> None:
    """Load ``url`` in headless Chromium and save the rendered page to ``output``.

    Raises:
        SystemExit: if Chromium fails or writes no image.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="pollers-chromium-") as profile:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={output}",
            url,
        ]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
        )
    if completed.returncode != 0 or not output.is_file():
        raise SystemExit(f"chromium failed (exit {completed.returncode}):\n{completed.stderr}")


def main(argv: list[str] | None = None) -> None:
    """Find the flow run, take the screenshot and say where it is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--api-url",
        default=os.environ.get("PREFECT_API_URL", DEFAULT_API_URL),
        help="the Prefect API (default: $PREFECT_API_URL or %(default)s)",
    )
    parser.add_argument(
        "--flow-run-id",
        type=UUID,
        help="the flow run to show (default: the latest completed batch-scans)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the PNG to write")
    args = parser.parse_args(argv)
    api_url = args.api_url.rstrip("/")
    flow_run_id = args.flow_run_id or asyncio.run(latest_completed_run(api_url))
    ui_url = api_url.removesuffix("/api")
    page = f"{ui_url}/v2/runs/flow-run/{flow_run_id}?tab=Artifacts"
    screenshot(page, args.output, find_chromium())
    print(f"{page} -> {args.output} ({args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
