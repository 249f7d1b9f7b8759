"""Rate limits: 200 ModelRoute executions against the simulator's 60 requests per window.

All waits share one credentials block, hence one rate-limit gate fed by the
``X-RateLimit-*`` headers. ``bound_s`` is the least time the limit allows for the
requests made: the simulator's windows are fixed and aligned to the epoch, so N
requests starting at t0 need ceil(N / 60) windows and the last one cannot be sent
before the start of the last of them. ``makespan_s`` runs from the first request
to the last response.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

import httpx

from benchmarks.common import emit, simulator_process
from prefect_pollers import ModelRouteCredentials

LIMIT = 60
WINDOW_S = 60.0


class RecordingTransport(httpx.AsyncBaseTransport):
    """The network, noting when each request is sent."""

    def __init__(self, max_connections: int) -> None:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.network = httpx.AsyncHTTPTransport(limits=limits)
        self.sent: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(time.time())
        return await self.network.handle_async_request(request)

    async def aclose(self) -> None:
        await self.network.aclose()


async def run_executions(base_url: str, count: int, scale: float) -> tuple[list[float], float]:
    """Run ``count`` executions at once; returns request send times and the end time."""
    credentials = ModelRouteCredentials(api_key="sim-key", base_url=base_url, policy_scale=scale)
    transport = RecordingTransport(credentials.max_connections)
    async with credentials.get_client(transport=transport) as client:

        async def one(index: int) -> None:
            request = credentials.parse_request({"model": "image-gen", "input": {"n": index}})
            await client.wait_for_result(await client.submit(request))

        await asyncio.gather(*(one(i) for i in range(count)))
    return transport.sent, time.time()


def least_time(first: float, requests: int, window: float) -> float:
    """The least time ``requests`` take from ``first`` under fixed epoch-aligned windows."""
    windows = math.ceil(requests / LIMIT)
    last_window_start = (math.floor(first / window) + windows - 1) * window
    return max(0.0, last_window_start - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args()
    config = {
        "time_scale": args.time_scale,
        "seed": 9,
        "rate_limit": LIMIT,
        "rate_window_s": WINDOW_S,
    }
    with simulator_process(config) as sim:
        sent, ended = asyncio.run(
            run_executions(sim.base_url("modelroute"), args.executions, args.time_scale)
        )
        stats = sim.stats()["modelroute"]
    window = WINDOW_S * args.time_scale
    first = min(sent)
    bound = least_time(first, len(sent), window)
    makespan = ended - first
    emit(
        "rate_limit",
        executions=args.executions,
        completed=stats["outcomes"].get("COMPLETED", 0),
        requests=len(sent),
        http_429=stats["http_429"],
        window_max_requests=stats["window_max_requests"],
        window_s=window,
        makespan_s=round(makespan, 2),
        bound_s=round(bound, 2),
        makespan_ratio_to_bound=round(makespan / bound, 3) if bound else None,
    )


if __name__ == "__main__":
    main()
