"""Save demo credentials blocks that point at the local provider simulator.

The deployments in ``deployments/prefect.yaml`` load their credentials by block name
(``exona``, ``twyn``, ``apixo``, ``modelroute``, ``generic``). This saves blocks of
those names for the simulator (``make simulator``), with its API key and its time
scale as ``policy_scale``; blocks of the same names with real API keys and base URLs
make the same deployments run against the real providers.

Run it against the Prefect API in ``PREFECT_API_URL``::

    python -m deployments.create_demo_blocks [--simulator-url http://127.0.0.1:8765]
        [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from prefect_pollers import PROVIDERS, JobApiCredentials
from prefect_pollers.providers.registry import DEMO_TIME_SCALE, SIMULATOR_API_KEY

SIMULATOR_URL = "http://127.0.0.1:8765"


def demo_blocks(simulator_url: str, time_scale: float) -> dict[str, JobApiCredentials[Any]]:
    """The demo blocks by provider name, each pointing at its path on the simulator.

    Args:
        simulator_url: The simulator's root URL.
        time_scale: The simulator's time scale, used as every block's ``policy_scale``.
    """
    return {
        entry.name: entry.simulator_block(
            simulator_url, api_key=SIMULATOR_API_KEY, time_scale=time_scale
        )
        for entry in PROVIDERS
    }


async def save_demo_blocks(simulator_url: str, time_scale: float) -> list[str]:
    """Save (or overwrite) every demo block; returns the saved names."""
    blocks = demo_blocks(simulator_url, time_scale)
    for name, block in blocks.items():
        await block.asave(name, overwrite=True)
    return list(blocks)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and save the blocks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--simulator-url",
        default=SIMULATOR_URL,
        help=f"the simulator's root URL (default: {SIMULATOR_URL})",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEMO_TIME_SCALE,
        help=f"the simulator's --time-scale (default: {DEMO_TIME_SCALE})",
    )
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    names = asyncio.run(save_demo_blocks(args.simulator_url, args.time_scale))
    print(
        f"saved blocks {', '.join(names)} for the simulator at {args.simulator_url} "
        f"(policy_scale={args.time_scale})"
    )


if __name__ == "__main__":
    main()
