"""Durable waits against in-process waits: what a suspended flow run costs its worker.

Two deployments of ``flows/scenario_sweep.py`` on one process worker, against a
real ``prefect server start`` and the simulator (both child processes), run at once:
``jobs`` Twyn simulations waited for in process, and the same number handed over to
the poller service (``prefect-pollers poller``, its own process) with
``handover_after=0``. At time scale 1 a simulation lasts 4 to 8 minutes, as Twyn's do.

- ``process_seconds_ratio``: flow-run process seconds per job, durable over
  in-process. A run's process seconds are the spans of its state history from each
  ``Pending`` (the worker starts its process) to the next ``Suspended`` or terminal
  state (the process exits).
- ``resume_lag_s``: the latency durable mode adds between the last job's end (the
  simulator's clock) and the flow run's completion, over the in-process run's own.
- ``calls_ratio``: status calls per job, durable over in-process.
- ``duplicate_submits``: as counted by the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import State, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from benchmarks.common import emit, prefect_server, simulator_process
from prefect_pollers import TwynCredentials

ROOT = Path(__file__).resolve().parent.parent
POOL = "bench-durable-pool"
BLOCK = "bench-twyn"
MODES = {"in-process": None, "durable": {"handover_after": 0}}
TERMINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


def _deployments_yaml(path: Path, jobs: int) -> None:
    days = list(range(1, jobs // 2 + 1))
    deployments = [
        {
            "name": f"bench-{mode}",
            "entrypoint": "flows/scenario_sweep.py:scenario_sweep",
            "parameters": {
                "scenarios": ["heatwave", "flood"],
                "grid": {"days": days},
                "credentials": BLOCK,
                "concurrency": jobs,
                "artifact_key": f"bench-{mode}",
                "durable": durable,
            },
            "work_pool": {"name": POOL},
        }
        for mode, durable in MODES.items()
    ]
    path.write_text(
        yaml.safe_dump(
            {
                "name": "bench-durable",
                "build": [
                    {
                        "prefect.deployments.steps.run_shell_script": {
                            "id": "root",
                            "script": "pwd",
                            "stream_output": False,
                        }
                    }
                ],
                "pull": [
                    {
                        "prefect.deployments.steps.set_working_directory": {
                            "directory": "{{ root.stdout }}"
                        }
                    }
                ],
                "deployments": deployments,
            }
        )
    )


def _process_seconds(states: list[State]) -> float:
    ordered = sorted(states, key=lambda s: s.timestamp)
    total, started = 0.0, None
    for state in ordered:
        if state.type == StateType.PENDING and started is None:
            started = state.timestamp
        elif started is not None and (state.type in TERMINAL or (state.type == StateType.PAUSED)):
            total += (state.timestamp - started).total_seconds()
            started = None
    return total


def _resume_breakdown(states: list[State], last_end: float) -> dict[str, float]:
    """Where the durable run's lag goes, span by span.

    From the last job's end to its resume (the poller and the automation), to the
    worker's pickup, to its process running, to completion.
    """
    after = [s for s in states if s.timestamp.timestamp() >= last_end]
    stamps = {}
    for state in after:
        stamps.setdefault(state.type, state.timestamp.timestamp())
    marks = [last_end, stamps.get(StateType.SCHEDULED), stamps.get(StateType.PENDING)]
    marks += [stamps.get(StateType.RUNNING), stamps.get(StateType.COMPLETED)]
    names = ["to_resume_s", "to_pickup_s", "to_running_s", "to_completed_s"]
    return {
        f"lag_{name}": round(later - earlier, 2)
        for name, earlier, later in zip(names, marks[:-1], marks[1:], strict=True)
        if earlier is not None and later is not None
    }


def _cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)}: {done.stdout}\n{done.stderr}")
    return done.stdout


def _start(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / f"{name}.log", "wb") as out:
        return subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def _measure(
    api_url: str, sim_url: str, runs: dict[str, UUID], timeout: float
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            deadline = time.monotonic() + timeout
            while True:
                found = {m: await client.read_flow_run(r) for m, r in runs.items()}
                if all(run.state_type in TERMINAL for run in found.values()):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"runs not finished: { {m: r.state for m, r in found.items()} }"
                    )
                await asyncio.sleep(2)
            async with httpx.AsyncClient(base_url=sim_url, timeout=30) as sim:
                stats = (await sim.get("/_sim/stats")).json()["twyn"]
                ended = (await sim.get("/_sim/jobs/twyn")).json()["jobs"]
            for mode, run in found.items():
                states = await client.read_flow_run_states(run.id)
                artifacts = await client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])
                    )
                )
                tables = [a.data for a in artifacts if a.type == "table"]
                rows = [json.loads(t) if isinstance(t, str) else t for t in tables][:1]
                rows = rows[0] if rows else []
                ids = [row["simulation_id"] for row in rows if row.get("simulation_id")]
                completed = max(s.timestamp for s in states if s.type in TERMINAL)
                last_end = max(ended[i]["ended_at"] or 0.0 for i in ids) if ids else 0.0
                figures[mode] = {
                    "state": run.state_type.value if run.state_type else None,
                    "completed": sum(row["status"] == "succeeded" for row in rows),
                    "process_seconds": _process_seconds(states),
                    "lag_s": completed.timestamp() - last_end,
                    "status_calls": sum(stats["status_calls_per_job"].get(i, 0) for i in ids),
                    "jobs": len(ids),
                    "suspensions": sum(s.name == "Suspended" for s in states),
                    "last_end": last_end,
                    "states": sorted(states, key=lambda s: s.timestamp),
                }
            figures["duplicate_submits"] = stats["duplicate_submits"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--api-url", help="a Prefect server to use (default: start one)")
    parser.add_argument(
        "--worker-query-s", type=float, default=10.0, help="PREFECT_WORKER_QUERY_SECONDS"
    )
    parser.add_argument("--scan-interval", type=float, default=5.0, help="the poller's")
    parser.add_argument("--resume-grace", type=float, default=10.0, help="the poller's")
    args = parser.parse_args()
    jobs = args.jobs - args.jobs % 2

    work = Path(tempfile.mkdtemp(prefix="pollers-bench-durable-"))
    processes: list[subprocess.Popen[bytes]] = []
    with ExitStack() as cleanup:
        api_url = cleanup.enter_context(prefect_server(args.api_url))
        cleanup.callback(lambda: [_stop(process) for process in processes])
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(work / "home"),
            "PREFECT_LOCAL_STORAGE_PATH": str(work / "storage"),
            "PREFECT_WORKER_QUERY_SECONDS": str(args.worker_query_s),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "DO_NOT_TRACK": "1",
            "PYTHONPATH": str(ROOT),
        }
        with simulator_process({"time_scale": args.time_scale, "seed": args.seed}) as sim:
            _cli(["block", "register", "-m", "prefect_pollers"], env)
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                TwynCredentials(
                    api_key="sim-key",
                    base_url=sim.base_url("twyn"),
                    policy_scale=args.time_scale,
                ).save(BLOCK, overwrite=True)
            _cli(["work-pool", "create", POOL, "--type", "process", "--overwrite"], env)
            _deployments_yaml(work / "prefect.yaml", jobs)
            _cli(
                ["--no-prompt", "deploy", "--all", "--prefect-file", str(work / "prefect.yaml")],
                env,
            )
            processes.append(
                _start(
                    "worker",
                    [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                    env,
                    work,
                )
            )
            processes.append(
                _start(
                    "poller",
                    [
                        *(sys.executable, "-m", "prefect_pollers.cli", "poller"),
                        *("--scan-interval", str(args.scan_interval)),
                        *("--resume-grace", str(args.resume_grace)),
                    ],
                    env,
                    work,
                )
            )
            runs = {}
            for mode in MODES:
                output = _cli(["deployment", "run", f"scenario-sweep/bench-{mode}"], env)
                runs[mode] = UUID(output.split("UUID: ")[1].split()[0])
            started = time.monotonic()
            timeout = 600 * args.time_scale * 2 + 300
            figures = asyncio.run(_measure(api_url, sim.url, runs, timeout))
            wall = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)
    in_process, durable = figures["in-process"], figures["durable"]
    resumed = _resume_breakdown(durable["states"], durable["last_end"])
    per_job = {
        m: f["process_seconds"] / max(f["jobs"], 1)
        for m, f in (("in", in_process), ("durable", durable))
    }
    emit(
        "durable",
        jobs=jobs,
        completed=durable["completed"],
        in_process_completed=in_process["completed"],
        process_seconds_ratio=round(per_job["durable"] / per_job["in"], 4)
        if per_job["in"]
        else None,
        durable_process_seconds=round(durable["process_seconds"], 1),
        in_process_process_seconds=round(in_process["process_seconds"], 1),
        resume_lag_s=round(durable["lag_s"] - in_process["lag_s"], 2),
        durable_lag_s=round(durable["lag_s"], 2),
        in_process_lag_s=round(in_process["lag_s"], 2),
        worker_query_s=args.worker_query_s,
        calls_ratio=round(
            (durable["status_calls"] / max(durable["jobs"], 1))
            / max(in_process["status_calls"] / max(in_process["jobs"], 1), 1e-9),
            3,
        ),
        calls_per_job=round(durable["status_calls"] / max(durable["jobs"], 1), 2),
        in_process_calls_per_job=round(in_process["status_calls"] / max(in_process["jobs"], 1), 2),
        suspensions=durable["suspensions"],
        **resumed,
        duplicate_submits=figures["duplicate_submits"],
        time_scale=args.time_scale,
        wall_s=round(wall, 1),
    )


if __name__ == "__main__":
    main()
