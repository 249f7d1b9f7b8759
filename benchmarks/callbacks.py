"""Callbacks: 500 APIXO jobs ended by their callbacks, the same 500 polled, and 10 % lost.

Real time (time scale 1: a nano-banana task takes its 5-20 s), on the simulator in
its own process, which posts each task's callback over loopback to a webhook
receiver served in this process (capability-URL tokens checked, waits woken
through the inbox). Every run submits the same 500 tasks at once through one
block, with APIXO's nano-banana preset (5 s, then every 3 s) and the default
safety cadence of 60 s in callback mode. ``calls_per_job`` counts status requests
per job as the simulator saw them; lag runs from a job's end (the simulator's
clock) to its wait's return (ours: one machine, one clock), in real seconds. The
third run loses 10 % of the callbacks: those jobs are found by the safety poll.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from typing import Any

import httpx

from benchmarks.common import emit, percentile, simulator_process
from prefect_pollers import ApixoCredentials
from prefect_pollers.ops.serving import BackgroundServer, bind_socket
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import CallbackInbox


def free_url() -> str:
    with bind_socket("127.0.0.1", 0) as sock:
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def run(
    sim_url: str, base_url: str, jobs: int, *, callbacks: bool, scale: float
) -> dict[str, Any]:
    """Submit ``jobs`` tasks at once and wait for each; returns the run's figures."""
    secret = secrets.token_urlsafe(32)
    receiver_url = free_url()
    block = ApixoCredentials(
        api_key="sim-key",
        base_url=base_url,
        policy_scale=scale,
        callback_base_url=receiver_url if callbacks else None,
        webhook_secret=secret if callbacks else None,
    )
    inbox = CallbackInbox()
    server = None
    if callbacks:
        host, port = receiver_url.removeprefix("http://").split(":")
        server = BackgroundServer(
            create_webhook_app([block], inbox=inbox, emit_events=False), host, int(port)
        )
        server.start()
    returned: dict[str, float] = {}
    mode = "callback" if callbacks else "async"
    try:
        async with block.get_client() as client:

            async def one(index: int) -> None:
                ref = await client.submit(
                    {"model": "nano-banana", "input": {"prompt": f"p{index}"}, "request_type": mode}
                )
                wakeup = inbox.register(ref) if callbacks else None
                try:
                    await client.wait_for_result(ref, wakeup=wakeup)
                    returned[ref.job_id] = time.time()
                finally:
                    if wakeup is not None:
                        inbox.unregister(ref, wakeup)

            outcomes = await asyncio.gather(*(one(i) for i in range(jobs)), return_exceptions=True)
    finally:
        if server is not None:
            server.stop()
    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as sim:
        ended = (await sim.get("/_sim/jobs/apixo")).json()["jobs"]
        stats = (await sim.get("/_sim/stats")).json()["apixo"]
    lags = [returned[job_id] - ended[job_id]["ended_at"] for job_id in returned]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return {
        "completed": len(returned),
        "errors": len(errors),
        "calls_per_job": round(stats["status_calls"] / jobs, 3),
        "mean_lag_s": round(sum(lags) / len(lags), 3) if lags else None,
        "p95_lag_s": round(percentile(lags, 0.95), 3) if lags else None,
        "max_lag_s": round(max(lags), 3) if lags else None,
        "callback_faults": stats.get("callback_faults", {}),
    }


async def configure(sim_url: str, patch: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as sim:
        (await sim.patch("/_sim/config", json=patch)).raise_for_status()
        (await sim.post("/_sim/reset")).raise_for_status()


async def main_async(jobs: int, drop: float, scale: float) -> None:
    with simulator_process({"time_scale": scale, "seed": 11}) as sim:
        base_url = sim.base_url("apixo")
        callback = await run(sim.url, base_url, jobs, callbacks=True, scale=scale)
        await configure(sim.url, {})
        polled = await run(sim.url, base_url, jobs, callbacks=False, scale=scale)
        await configure(sim.url, {"callback_faults": [{"kind": "lost", "rate": drop}]})
        dropped = await run(sim.url, base_url, jobs, callbacks=True, scale=scale)
    emit(
        "callbacks",
        jobs=jobs,
        completed=callback["completed"],
        calls_per_job=callback["calls_per_job"],
        mean_lag_s=callback["mean_lag_s"],
        p95_lag_s=callback["p95_lag_s"],
        poll_completed=polled["completed"],
        poll_calls_per_job=polled["calls_per_job"],
        poll_mean_lag_s=polled["mean_lag_s"],
        poll_p95_lag_s=polled["p95_lag_s"],
        dropped_rate=drop,
        dropped_lost=dropped["callback_faults"].get("lost", 0),
        dropped_completed=dropped["completed"],
        dropped_calls_per_job=dropped["calls_per_job"],
        dropped_mean_lag_s=dropped["mean_lag_s"],
        dropped_max_lag_s=dropped["max_lag_s"],
        safety_interval_s=60.0 * scale,
        time_scale=scale,
        errors=callback["errors"] + polled["errors"] + dropped["errors"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--drop", type=float, default=0.1, help="fraction of callbacks lost")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="real seconds per simulated second"
    )
    args = parser.parse_args()
    asyncio.run(main_async(args.jobs, args.drop, args.time_scale))


if __name__ == "__main__":
    main()
