"""``prefect-pollers ledger``: upgrade the schema, show or release a key, prune old rows."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import datetime, timezone
from typing import Any

from prefect_pollers.ledger.schema import SCHEMA_VERSION
from prefect_pollers.ledger.settings import ledger_url
from prefect_pollers.ledger.store import Ledger, SubmitRow, SubmitState, dumps_row

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """Seconds in an age such as ``30d``, ``12h``, ``90m`` or ``45s``.

    Raises:
        argparse.ArgumentTypeError: not such an age.
    """
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 30d, 12h, 90m or 45s")
    return float(found.group(1)) * _UNITS[found.group(2)]


def add_ledger_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``ledger upgrade|show|release|prune`` on an argparse sub-parsers object."""
    ledger = subparsers.add_parser(
        "ledger", help="the ledger of submits (PREFECT_POLLERS_LEDGER_URL)"
    )
    commands = ledger.add_subparsers(dest="ledger_command", required=True)
    commands.add_parser("upgrade", help="create the ledger's tables or migrate them")
    show = commands.add_parser("show", help="what the ledger knows of an idempotency key")
    show.add_argument("key")
    release = commands.add_parser(
        "release",
        help="forget an uncertain submit of KEY (after checking the provider has no such job): "
        "the next run submits it",
    )
    release.add_argument("key")
    release.add_argument("--endpoint", help="only at this endpoint (as `show` prints it)")
    prune = commands.add_parser("prune", help="delete rows no live run needs")
    prune.add_argument(
        "--older-than", type=parse_age, required=True, metavar="AGE", help="e.g. 30d"
    )


def run_ledger_cli(args: argparse.Namespace) -> int:
    """Run a ``ledger`` sub-command; returns the process exit code."""
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    ledger = Ledger(ledger_url())
    try:
        if args.ledger_command == "upgrade":
            before = await ledger.upgrade()
            print(f"ledger at {ledger!r}: schema version {before} -> {SCHEMA_VERSION}")
            return 0
        if args.ledger_command == "show":
            rows = await ledger.rows_named(args.key)
            if not rows:
                print(f"no submit under key {args.key!r} in {ledger!r}", file=sys.stderr)
                return 1
            for row in rows:
                print(dumps_row(row))
                print(f"  {await _explain(ledger, row)}")
            return 0
        if args.ledger_command == "release":
            released = await ledger.release_key(args.key, args.endpoint)
            print(f"released {released} row(s) of key {args.key!r}")
            return 0 if released else 1
        pruned = await ledger.prune(args.older_than)
        print("pruned " + ", ".join(f"{n} {kind} row(s)" for kind, n in pruned.items()))
        return 0
    finally:
        await ledger.aclose()


async def _explain(ledger: Ledger, row: SubmitRow) -> str:
    """What a row means for the user, in one sentence."""
    when = datetime.fromtimestamp(row.updated_at, timezone.utc).isoformat(timespec="seconds")
    if row.state == SubmitState.SUBMITTED:
        return f"submitted: job {row.job_id} (recorded {when}); a re-run re-attaches to it"
    if row.state == SubmitState.RESERVED and await ledger.owner_is_live(row.owner):
        return f"being submitted now by flow run {row.flow_run_id} (since {when})"
    cause: Any = row.error or "its session stopped while the request was on its way"
    return (
        f"uncertain since {when}: {cause}. The job may exist: look for it at the provider; "
        f"if it does not, `prefect-pollers ledger release {row.key}`"
    )
