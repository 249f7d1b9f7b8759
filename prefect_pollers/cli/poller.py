"""``prefect-pollers poller``: the poller service as a long-running process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from prefect.settings import PREFECT_API_URL

from prefect_pollers.client import close_shared_clients
from prefect_pollers.durable.poller import LOGGER, PollerService
from prefect_pollers.durable.resume import ensure_resume_automation
from prefect_pollers.ledger.leases import HEARTBEAT_S, SHARDS

DESCRIPTION = (
    "Wait for the jobs that suspended flow runs handed over (run_batch(durable=...)) and "
    "resume each run when its jobs have ended. Start one or more beside your workers: "
    "pollers share the flow runs by leasing shards in the ledger, and a stopped poller's "
    "shards move to the others within two heartbeats. It needs PREFECT_API_URL and the "
    "workers' ledger: PREFECT_POLLERS_LEDGER_URL (default: a SQLite file under "
    "PREFECT_HOME, for one machine; for pollers and workers on several machines set it to "
    "one PostgreSQL URL everywhere)."
)


def _shard(text: str) -> tuple[int, int]:
    shard, _, shards = text.partition("/")
    try:
        parsed = int(shard), int(shards)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give I/N, e.g. 0/2") from None
    if parsed[1] < 1 or not 0 <= parsed[0] < parsed[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: give I/N with 0 <= I < N")
    return parsed


def add_poller_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``poller`` on an argparse sub-parsers object."""
    poller = subparsers.add_parser("poller", help="the poller service", description=DESCRIPTION)
    poller.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="I/N",
        help="a static shard instead of leases: this poller takes shard I of N (flow runs "
        "by a digest of their id) and nobody takes over when it stops",
    )
    poller.add_argument(
        "--shards",
        type=int,
        default=SHARDS,
        help=f"how many shards pollers lease (the same on every poller; default {SHARDS})",
    )
    poller.add_argument(
        "--heartbeat",
        type=float,
        default=HEARTBEAT_S,
        help="seconds between two lease heartbeats; a stopped poller's shards move within "
        f"twice that (default {HEARTBEAT_S:g})",
    )
    poller.add_argument(
        "--scan-interval", type=float, default=5.0, help="seconds between looks for work"
    )
    poller.add_argument(
        "--resume-grace",
        type=float,
        default=10.0,
        help="seconds to let the resume automation act before resuming through the API",
    )
    poller.add_argument(
        "--no-automation",
        action="store_true",
        help="do not create the resume automation (resume through the API only)",
    )


async def _serve(args: argparse.Namespace) -> None:
    if not args.no_automation:
        await ensure_resume_automation()
    shard, shards = args.shard if args.shard is not None else (None, args.shards)
    service = PollerService(
        shard=shard,
        shards=shards,
        heartbeat=args.heartbeat,
        scan_interval=args.scan_interval,
        resume_grace=0.0 if args.no_automation else args.resume_grace,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.run(stop)
    finally:
        await close_shared_clients()


def run_poller_cli(args: argparse.Namespace) -> int:
    """Run the service until SIGINT or SIGTERM; returns the process exit code."""
    if not PREFECT_API_URL.value():
        print(
            "poller: set PREFECT_API_URL to your Prefect server's API: the poller finds "
            "suspended flow runs there and resumes them",
            file=sys.stderr,
        )
        return 2
    # Prefect has configured the root logger on import: give the poller's its own output.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    asyncio.run(_serve(args))
    return 0
