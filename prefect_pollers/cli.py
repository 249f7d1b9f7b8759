"""The ``prefect-pollers`` command line."""

from __future__ import annotations

import argparse
import sys

from prefect_pollers.simulator.cli import add_simulator_command, run_simulator_cli


def main(argv: list[str] | None = None) -> int:
    """Run a ``prefect-pollers`` sub-command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="prefect-pollers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_simulator_command(commands)
    args = parser.parse_args(argv)
    if args.command == "simulator":
        return run_simulator_cli(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
