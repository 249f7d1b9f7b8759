"""The ``prefect-pollers`` command line."""

from __future__ import annotations

import argparse
import sys

SIMULATOR_EXTRA = "the simulator needs its extra: pip install 'prefect-pollers[simulator]'"


def main(argv: list[str] | None = None) -> int:
    """Run a ``prefect-pollers`` sub-command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="prefect-pollers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    try:
        from prefect_pollers.simulator.cli import add_simulator_command, run_simulator_cli
    except ModuleNotFoundError as exc:
        if exc.name not in ("uvicorn", "starlette"):
            raise
        commands.add_parser("simulator", help=SIMULATOR_EXTRA, add_help=False)
        parser.parse_known_args(argv)
        parser.error(SIMULATOR_EXTRA)
    add_simulator_command(commands)
    args = parser.parse_args(argv)
    if args.command == "simulator":
        return run_simulator_cli(args)
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
