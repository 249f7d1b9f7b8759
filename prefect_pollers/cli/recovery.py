"""``prefect-pollers recovery install``: save the crash-recovery automations."""

from __future__ import annotations

import argparse
import asyncio
import sys

from prefect.settings import PREFECT_API_URL

from prefect_pollers.ops.recovery import (
    DEFAULT_MAX_RERUNS,
    DEFAULT_TAGS,
    crash_recovery_automations,
    ensure_crash_recovery,
)

DESCRIPTION = (
    "Create or update (idempotently) the automations that mark flow runs whose heartbeats "
    "stopped Crashed and schedule crashed deployment runs again, so that they re-attach to "
    "their jobs. Run the workers with PREFECT_FLOWS_HEARTBEAT_FREQUENCY set to the same "
    "--heartbeat-frequency."
)


def add_recovery_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``recovery install`` on an argparse sub-parsers object."""
    recovery = subparsers.add_parser("recovery", help="crash recovery automations")
    commands = recovery.add_subparsers(dest="recovery_command", required=True)
    install = commands.add_parser("install", help=DESCRIPTION, description=DESCRIPTION)
    install.add_argument(
        "--tag",
        dest="tags",
        action="append",
        metavar="TAG",
        help=f"watch flow runs with this tag (repeatable; default: {', '.join(DEFAULT_TAGS)})",
    )
    install.add_argument(
        "--heartbeat-frequency",
        type=int,
        metavar="SECONDS",
        help="the workers' PREFECT_FLOWS_HEARTBEAT_FREQUENCY (default: this shell's setting)",
    )
    install.add_argument(
        "--silence",
        type=float,
        metavar="SECONDS",
        help="no heartbeat for this long means crashed (default: 3 heartbeat periods)",
    )
    install.add_argument(
        "--max-reruns",
        type=int,
        default=DEFAULT_MAX_RERUNS,
        help=f"re-run a crashed run at most this many times (default {DEFAULT_MAX_RERUNS})",
    )


def run_recovery_cli(args: argparse.Namespace) -> int:
    """Save the automations and print them; returns the process exit code."""
    if not PREFECT_API_URL.value():
        print(
            "recovery: set PREFECT_API_URL to the Prefect server to save them on", file=sys.stderr
        )
        return 2
    try:
        automations = crash_recovery_automations(
            tags=args.tags or DEFAULT_TAGS,
            heartbeat_frequency_s=args.heartbeat_frequency,
            silence_s=args.silence,
            max_reruns=args.max_reruns,
        )
    except ValueError as exc:
        print(f"recovery: {exc}", file=sys.stderr)
        return 2
    saved = asyncio.run(ensure_crash_recovery(automations))
    for automation in automations:
        print(f"{saved[automation.name]}  {automation.name}: {automation.description}")
    return 0
