"""Save demo credentials blocks that point at the local provider simulator.

The deployments in ``deployments/prefect.yaml`` load their credentials by block name
(``exona``, ``twyn``, ``apixo``, ``modelroute``, ``generic``, ``openai-batch``,
``anthropic-batch``). This saves blocks of
those names for the simulator (``make simulator``), with its API key and its time
scale as ``policy_scale``; blocks of the same names with real API keys and base URLs
make the same deployments run against the real providers. It also saves
``apixo-callbacks``: the APIXO block with callbacks on, pointing at the webhook
receiver of ``make webhooks`` (a fresh random ``webhook_secret``, which the receiver
reads from the same saved block).

Run it against the Prefect API in ``PREFECT_API_URL``::

    python -m deployments.create_demo_blocks [--simulator-url http://127.0.0.1:8765]
        [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from typing import Any

from prefect_pollers import JobApiCredentials
from prefect_pollers.testing.registry import (
    BATCH_PROVIDERS,
    DEMO_TIME_SCALE,
    PROVIDERS,
    SIMULATOR_API_KEY,
    provider_entry,
)

SIMULATOR_URL = "http://127.0.0.1:8765"
RECEIVER_URL = "http://127.0.0.1:8780"
CALLBACK_BLOCK = "apixo-callbacks"


def demo_blocks(
    simulator_url: str, time_scale: float, receiver_url: str = RECEIVER_URL
) -> dict[str, JobApiCredentials[Any]]:
    """The demo blocks by name, each pointing at its path on the simulator.

    Args:
        simulator_url: The simulator's root URL.
        time_scale: The simulator's time scale, used as every block's ``policy_scale``.
        receiver_url: The webhook receiver's URL, for ``apixo-callbacks``.
    """
    blocks = {
        entry.name: entry.simulator_block(
            simulator_url, api_key=SIMULATOR_API_KEY, time_scale=time_scale
        )
        for entry in (*PROVIDERS, *BATCH_PROVIDERS)
    }
    blocks[CALLBACK_BLOCK] = provider_entry("apixo").simulator_block(
        simulator_url,
        api_key=SIMULATOR_API_KEY,
        time_scale=time_scale,
        callback_base_url=receiver_url,
        webhook_secret=secrets.token_urlsafe(32),
    )
    return blocks


async def save_demo_blocks(
    simulator_url: str, time_scale: float, receiver_url: str = RECEIVER_URL
) -> list[str]:
    """Save (or overwrite) every demo block; returns the saved names."""
    blocks = demo_blocks(simulator_url, time_scale, receiver_url)
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
    parser.add_argument(
        "--receiver-url",
        default=RECEIVER_URL,
        help=f"the webhook receiver's URL, for {CALLBACK_BLOCK} (default: {RECEIVER_URL})",
    )
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    names = asyncio.run(save_demo_blocks(args.simulator_url, args.time_scale, args.receiver_url))
    print(
        f"saved blocks {', '.join(names)} for the simulator at {args.simulator_url} "
        f"(policy_scale={args.time_scale})"
    )


if __name__ == "__main__":
    main()
