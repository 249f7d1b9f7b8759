"""Shared rate limit: 600 ModelRoute executions over 3 processes on one key, 60 requests per 3 s.

Each process runs its share of the executions through its own client (its own
rate-limit gate, fed by the ``X-RateLimit-*`` headers of responses that also count
the other processes' requests). The block's ``shared_limits`` (60 requests per 3 s)
is held in a Prefect global concurrency limit on a real Prefect server, leased in
chunks. ``bound_s`` is the least time the simulator's fixed, epoch-aligned windows
allow for all the requests the three processes made (see ``benchmarks.rate_limit``);
``makespan_s`` runs from the first request to the last response, over all processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from benchmarks.common import emit, prefect_server, simulator_process
from benchmarks.rate_limit import LIMIT, WINDOW_S, RecordingTransport, least_time
from prefect_pollers import ModelRouteCredentials
from prefect_pollers.limits.shared import SharedLimits
from prefect_pollers.providers.modelroute import modelroute_policy

# ModelRoute's pace with no deadline: the limit, not a deadline, decides the makespan.
POLICY = modelroute_policy().model_copy(update={"deadline": None})


async def run_share(base_url: str, index: int, count: int, scale: float) -> dict[str, object]:
    """Run executions ``index*count ..`` on one client; returns send times and the end."""
    credentials = ModelRouteCredentials(
        api_key="sim-key",
        base_url=base_url,
        policy_scale=scale,
        shared_limits=SharedLimits(requests=LIMIT, per_seconds=WINDOW_S * scale),
    )
    transport = RecordingTransport(credentials.max_connections)
    async with credentials.get_client(transport=transport) as client:

        async def one(number: int) -> None:
            request = credentials.parse_request({"model": "image-gen", "input": {"n": number}})
            await client.wait_for_result(await client.submit(request), POLICY)

        await asyncio.gather(*(one(index * count + i) for i in range(count)))
        assert client.shared is not None and client.shared.requests is not None
        leases = client.shared.requests.leases_acquired
    return {"sent": transport.sent, "ended": time.time(), "leases": leases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=600)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--child", type=int, help="run share number CHILD in this process")
    parser.add_argument("--base-url")
    args = parser.parse_args()
    share = args.executions // args.processes
    if args.child is not None:
        result = asyncio.run(run_share(args.base_url, args.child, share, args.time_scale))
        print(json.dumps(result))
        return
    config = {"time_scale": args.time_scale, "seed": 9, "rate_limit": LIMIT}
    config["rate_window_s"] = WINDOW_S
    with simulator_process(config) as sim, prefect_server() as api_url:
        env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": os.getcwd()}
        common = [
            *("--base-url", sim.base_url("modelroute"), "--executions", str(args.executions)),
            *("--processes", str(args.processes), "--time-scale", str(args.time_scale)),
        ]
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.shared_rate_limit",
                    "--child",
                    str(index),
                    *common,
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for index in range(args.processes)
        ]
        results = []
        for child in children:
            out, _ = child.communicate()
            if child.returncode != 0:
                raise RuntimeError(f"a share failed ({child.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        stats = sim.stats()["modelroute"]
    sent = sorted(t for result in results for t in result["sent"])
    first, ended = sent[0], max(result["ended"] for result in results)
    window = WINDOW_S * args.time_scale
    bound = least_time(first, len(sent), window)
    makespan = ended - first
    emit(
        "shared_rate_limit",
        executions=args.executions,
        processes=args.processes,
        completed=stats["outcomes"].get("COMPLETED", 0),
        requests=len(sent),
        http_429=stats["http_429"],
        window_max_requests=stats["window_max_requests"],
        window_s=window,
        gcl_leases=sum(result["leases"] for result in results),
        makespan_s=round(makespan, 2),
        bound_s=round(bound, 2),
        makespan_ratio_to_bound=round(makespan / bound, 3) if bound else None,
    )


if __name__ == "__main__":
    main()
