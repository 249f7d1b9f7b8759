"""The ``prefect-pollers`` command line: simulator, webhooks, poller, recovery, ledger."""

from __future__ import annotations

import argparse
import sys

from prefect_pollers.cli.ledger import add_ledger_command, run_ledger_cli
from prefect_pollers.cli.poller import add_poller_command, run_poller_cli
from prefect_pollers.cli.recovery import add_recovery_command, run_recovery_cli

SERVER_EXTRA = "the {command} command needs its extra: pip install 'prefect-pollers[{extra}]'"
EXTRAS = {"simulator": "simulator", "webhooks": "webhooks"}


def main(argv: list[str] | None = None) -> int:
    """Run a ``prefect-pollers`` sub-command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="prefect-pollers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_recovery_command(commands)
    add_poller_command(commands)
    add_ledger_command(commands)
    wanted = argv if argv is not None else sys.argv[1:]
    if wanted[:1] not in (
        ["recovery"],
        ["poller"],
        ["ledger"],
    ):  # the server commands need their extras
        try:
            from prefect_pollers.cli.simulator import add_simulator_command, run_simulator_cli
            from prefect_pollers.cli.webhooks import add_webhooks_command, run_webhooks_cli
        except ModuleNotFoundError as exc:
            if exc.name not in ("uvicorn", "starlette"):
                raise
            command = wanted[0] if wanted and wanted[0] in EXTRAS else "simulator"
            parser.error(SERVER_EXTRA.format(command=command, extra=EXTRAS[command]))
        add_simulator_command(commands)
        add_webhooks_command(commands)
    args = parser.parse_args(argv)
    if args.command == "recovery":
        return run_recovery_cli(args)
    if args.command == "poller":
        return run_poller_cli(args)
    if args.command == "ledger":
        return run_ledger_cli(args)
    if args.command == "simulator":
        return run_simulator_cli(args)
    if args.command == "webhooks":
        return run_webhooks_cli(args)
    parser.error(f"unknown command {args.command}")
