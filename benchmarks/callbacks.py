"""Callbacks: 500 APIXO jobs ended by their callbacks, polled, 10 % lost; and Ed25519-signed.

Real time (time scale 1: a nano-banana task takes its 5-20 s), on the simulator in
its own process, which posts each task's callback over loopback to a webhook
receiver served in this process (capability-URL tokens checked, waits woken
through the inbox). Every run submits the same 500 tasks at once through one
block, with APIXO's nano-banana preset (5 s, then every 3 s) and the default
safety cadence of 60 s in callback mode. ``calls_per_job`` counts status requests
per job as the simulator saw them; lag runs from a job's end (the simulator's
clock) to its wait's return (ours: one machine, one clock), in real seconds. The
third run loses 10 % of the callbacks: those jobs are found by the safety poll.

Then the same with signatures: 500 tasks of the simulator's generic API (as long:
5-20 s) through an ``HttpJobApi`` whose callbacks are signed by fal's Ed25519 scheme
under the simulator's key, the receiver fetching the simulator's JWKS; once whole,
once with 10 % lost. Their lag runs to the wait's end: the generic API's result is a
request of its own, the same with or without callbacks, and is not fetched.
``ed25519_verify_us`` is the receiver's verification of one real signed callback
(signature, timestamp, JSON, job id; the replay claim aside), timed directly over
2,000 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx

from benchmarks.common import emit, percentile, simulator_process
from prefect_pollers import ApixoCredentials, HttpJobApi
from prefect_pollers.ops.serving import BackgroundServer, bind_socket
from prefect_pollers.providers.callbacks import CallbackCredentials
from prefect_pollers.providers.signatures import FAL
from prefect_pollers.testing.registry import GENERIC_SIMULATOR_API
from prefect_pollers.testing.simulator.signing import SigningKeys, sign
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import CallbackInbox
from prefect_pollers.webhooks.verify import CallbackVerifier

SEED = 11
SIM_ED25519 = FAL.model_copy(update={"jwks_url": "/.well-known/jwks.json"})
"""fal's scheme with the simulator's JWKS (a path on the API's origin)."""
VERIFY_CALLS = 2000


def free_url() -> str:
    with bind_socket("127.0.0.1", 0) as sock:
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def apixo_block(base_url: str, receiver_url: str | None, scale: float) -> ApixoCredentials:
    """APIXO with capability-URL callbacks to ``receiver_url`` (None: polled)."""
    return ApixoCredentials(
        api_key="sim-key",
        base_url=base_url,
        policy_scale=scale,
        callback_base_url=receiver_url,
        webhook_secret=secrets.token_urlsafe(32) if receiver_url else None,
    )


def ed25519_block(base_url: str, receiver_url: str | None, scale: float) -> HttpJobApi:
    """The generic API with fal-style Ed25519 callbacks to ``receiver_url``."""
    return HttpJobApi(
        **GENERIC_SIMULATOR_API,
        api_key="sim-key",
        base_url=base_url,
        policy_scale=scale,
        callback_base_url=receiver_url,
        callback_url_field="task.callback_url",
        callback_job_id_field="task.uid",
        callback_scheme=SIM_ED25519,
    )


def apixo_request(index: int, callbacks: bool) -> dict[str, Any]:
    mode = "callback" if callbacks else "async"
    return {"model": "nano-banana", "input": {"prompt": f"p{index}"}, "request_type": mode}


def generic_request(index: int, callbacks: bool) -> dict[str, Any]:
    return {"kind": "render", "params": {"n": index}}


async def run(
    sim_url: str,
    provider: str,
    block_of: Callable[[str | None], CallbackCredentials[Any]],
    request: Callable[[int, bool], dict[str, Any]],
    jobs: int,
    *,
    callbacks: bool,
    results: bool = True,
) -> dict[str, Any]:
    """Submit ``jobs`` jobs at once and wait for each; returns the run's figures.

    ``results``: each wait also fetches the job's result (the generic API's is a
    request of its own, the same with or without callbacks: left out of its lag).
    """
    receiver_url = free_url()
    block = block_of(receiver_url if callbacks else None)
    inbox = CallbackInbox()
    server = None
    if callbacks:
        host, port = receiver_url.removeprefix("http://").split(":")
        server = BackgroundServer(
            create_webhook_app([block], inbox=inbox, emit_events=False), host, int(port)
        )
        server.start()
    returned: dict[str, float] = {}
    try:
        async with block.get_client() as client:

            async def one(index: int) -> None:
                ref = await client.submit(request(index, callbacks))
                wakeup = inbox.register(ref) if callbacks else None
                try:
                    if results:
                        await client.wait_for_result(ref, wakeup=wakeup)
                    else:
                        await client.wait(ref, wakeup=wakeup)
                    returned[ref.job_id] = time.time()
                finally:
                    if wakeup is not None:
                        inbox.unregister(ref, wakeup)

            outcomes = await asyncio.gather(*(one(i) for i in range(jobs)), return_exceptions=True)
    finally:
        if server is not None:
            server.stop()
    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as sim:
        ended = (await sim.get(f"/_sim/jobs/{provider}")).json()["jobs"]
        stats = (await sim.get("/_sim/stats")).json()[provider]
        keys = (await sim.get("/_sim/keys")).json()
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
        "jwks_requests": keys["jwks_requests"],
    }


async def verify_us(base_url: str) -> float:
    """Microseconds the receiver takes to verify one Ed25519-signed callback.

    The request is signed as the simulator signs (its key, derived from the seed),
    and the verifier's JWKS is the simulator's, fetched once before the timing.
    """
    verifier = CallbackVerifier([ed25519_block(base_url, "http://127.0.0.1:9", 1.0)])
    body = json.dumps({"type": "task.updated", "task": {"uid": "t-1", "state": {"name": "DONE"}}})
    stamp = datetime.now(timezone.utc)
    headers = sign("ed25519", None, SigningKeys(SEED), "msg_1", stamp, body.encode())
    await verifier.verify("generic", "-", None, headers, body.encode())  # fetches the JWKS
    started = time.perf_counter()
    for _ in range(VERIFY_CALLS):
        await verifier.verify("generic", "-", None, headers, body.encode())
    return round((time.perf_counter() - started) / VERIFY_CALLS * 1e6, 1)


async def configure(sim_url: str, patch: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as sim:
        (await sim.patch("/_sim/config", json=patch)).raise_for_status()
        (await sim.post("/_sim/reset")).raise_for_status()


async def main_async(jobs: int, drop: float, scale: float) -> None:
    lost = {"callback_faults": [{"kind": "lost", "rate": drop}]}
    signed = {"callback_signing": {"generic": "ed25519"}, "generic_duration": [5.0, 20.0]}
    with simulator_process({"time_scale": scale, "seed": SEED}) as sim:
        apixo_url, generic_url = sim.base_url("apixo"), sim.base_url("generic")

        def apixo(receiver: str | None) -> CallbackCredentials[Any]:
            return apixo_block(apixo_url, receiver, scale)

        def generic(receiver: str | None) -> CallbackCredentials[Any]:
            return ed25519_block(generic_url, receiver, scale)

        callback = await run(sim.url, "apixo", apixo, apixo_request, jobs, callbacks=True)
        await configure(sim.url, {})
        polled = await run(sim.url, "apixo", apixo, apixo_request, jobs, callbacks=False)
        await configure(sim.url, lost)
        dropped = await run(sim.url, "apixo", apixo, apixo_request, jobs, callbacks=True)
        await configure(sim.url, {"callback_faults": None, **signed})
        signed_run = {"callbacks": True, "results": False}
        ed25519 = await run(sim.url, "generic", generic, generic_request, jobs, **signed_run)
        await configure(sim.url, lost)
        ed_dropped = await run(sim.url, "generic", generic, generic_request, jobs, **signed_run)
        verify_cost = await verify_us(generic_url)
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
        ed25519_completed=ed25519["completed"],
        ed25519_calls_per_job=ed25519["calls_per_job"],
        ed25519_mean_lag_s=ed25519["mean_lag_s"],
        ed25519_p95_lag_s=ed25519["p95_lag_s"],
        ed25519_jwks_fetches=ed25519["jwks_requests"],
        ed25519_dropped_lost=ed_dropped["callback_faults"].get("lost", 0),
        ed25519_dropped_completed=ed_dropped["completed"],
        ed25519_dropped_calls_per_job=ed_dropped["calls_per_job"],
        ed25519_dropped_max_lag_s=ed_dropped["max_lag_s"],
        ed25519_verify_us=verify_cost,
        safety_interval_s=60.0 * scale,
        time_scale=scale,
        errors=sum(r["errors"] for r in (callback, polled, dropped, ed25519, ed_dropped)),
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
