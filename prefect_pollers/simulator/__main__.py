"""``python -m prefect_pollers.simulator --port N ...``."""

from __future__ import annotations

import argparse

from prefect_pollers.simulator.cli import DESCRIPTION, configure_parser, run_simulator_cli


def main() -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(
        prog="python -m prefect_pollers.simulator", description=DESCRIPTION
    )
    configure_parser(parser)
    return run_simulator_cli(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
