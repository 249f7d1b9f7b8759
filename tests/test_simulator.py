"""The simulator as a whole: control routes, counters, scale, the loopback runner and the CLI."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_pollers.cli.simulator import add_simulator_command, build_config, run_simulator_cli
from prefect_pollers.ops.serving import bind_socket
from prefect_pollers.testing.simulator import (
    ManualClock,
    RealClock,
    SimulatorClock,
    SimulatorConfig,
    arunning_simulator,
    running_simulator,
)
from prefect_pollers.testing.simulator.jobs import NEVER, Job
from prefect_pollers.testing.simulator.stats import JobLedger
from prefect_pollers.testing.simulator.wire import format_seconds
from tests.sim_client import BEARER, SCAN, SCANS, simulator

# -- control routes -------------------------------------------------------------------


async def test_health_lists_the_providers() -> None:
    async with simulator() as (client, _):
        body = (await client.get("/_sim/health")).json()
        assert body == {
            "status": "ok",
            "providers": [
                "anthropic-batch",
                "apixo",
                "exona",
                "fal",
                "generic",
                "modelroute",
                "openai-batch",
                "twyn",
            ],
        }


async def test_reset_forgets_jobs_and_counters() -> None:
    async with simulator() as (client, _):
        scan = (await client.post(SCANS, json=SCAN, headers=BEARER)).json()
        await client.get(f"{SCANS}/{scan['id']}")
        assert (await client.post("/_sim/reset")).status_code == 200
        stats = (await client.get("/_sim/stats")).json()["exona"]
        assert stats["submits"] == 0 and stats["http_401"] == 0
        assert (await client.get(f"{SCANS}/{scan['id']}", headers=BEARER)).status_code == 404


async def test_reset_reseeds_so_ids_repeat() -> None:
    async with simulator(seed=11) as (client, _):
        first = (await client.post(SCANS, json=SCAN, headers=BEARER)).json()["id"]
        await client.post("/_sim/reset")
        again = (await client.post(SCANS, json=SCAN, headers=BEARER)).json()["id"]
        assert first == again


async def test_patch_config_merges_and_validates() -> None:
    async with simulator() as (client, state):
        patched = await client.patch(
            "/_sim/config",
            json={"api_key": "other", "faults": [{"kind": "http_503", "every": 2}]},
        )
        assert patched.status_code == 200
        assert patched.json()["api_key"] == "other" and patched.json()["time_scale"] == 1.0
        assert state.config.faults[0].every == 2
        assert (await client.get("/_sim/config")).json()["api_key"] == "other"
        assert (await client.post(SCANS, json=SCAN, headers=BEARER)).status_code == 401

        merged = await client.patch(
            "/_sim/config", json={"api_key": None, "apixo_durations": {"suno": [1, 2]}}
        )
        assert merged.json()["api_key"] == "sim-key"  # null restores the default
        assert merged.json()["apixo_durations"]["suno"] == [1, 2]
        assert merged.json()["apixo_durations"]["sora-2"] == [60, 300]

        for bad in ({"time_scale": 0}, {"no_such_knob": 1}, {"faults": [{"kind": "html"}]}):
            refused = await client.patch("/_sim/config", json=bad)
            assert refused.status_code == 422
            assert refused.json()["error"]["code"] == "validation_error"
        assert state.config.api_key == "sim-key"


# -- counters -------------------------------------------------------------------------


async def test_stats_count_what_clients_did() -> None:
    clock = ManualClock()
    async with simulator(clock=clock, exona_duration=(50, 50)) as (client, _):
        ids = []
        for key in ("a", "a", "b", None):
            headers = BEARER | ({"Idempotency-Key": key} if key else {})
            ids.append((await client.post(SCANS, json=SCAN, headers=headers)).json()["id"])
        await client.post(SCANS, json=SCAN)  # 401
        await client.post(SCANS, json={}, headers=BEARER)  # 422
        await client.get(f"{SCANS}/{ids[0]}", headers=BEARER)
        clock.advance(60)
        await client.get(f"{SCANS}/{ids[0]}", headers=BEARER)
        await client.get(f"{SCANS}/{ids[1]}", headers=BEARER)

        stats = (await client.get("/_sim/stats")).json()["exona"]
        assert stats["submits"] == 4
        assert stats["submits_per_idempotency_key"] == {"a": 2, "b": 1}
        assert stats["duplicate_submits"] == 1
        assert stats["status_calls"] == 3
        assert stats["status_calls_per_job"] == {ids[0]: 2, ids[1]: 1}
        assert (stats["jobs_in_flight"], stats["max_jobs_in_flight"]) == (0, 4)
        assert (stats["http_401"], stats["http_422"], stats["http_429"]) == (1, 1, 0)
        assert stats["outcomes"] == {"completed": 4}
        assert stats["unobserved_terminal_jobs"] == 2  # ids[2] and ids[3] were never polled
        assert stats["cancels"] == 0 and stats["faults_injected"] == {}


async def test_jobs_route_gives_each_job_its_span_and_on_request_its_data() -> None:
    clock = ManualClock()
    async with simulator(clock=clock, exona_duration=(50, 50)) as (client, _):
        scan = (await client.post(SCANS, json=SCAN, headers=BEARER)).json()
        job = (await client.get("/_sim/jobs/exona")).json()["jobs"][scan["id"]]
        assert job["ended_at"] is None and "data" not in job
        clock.advance(60)
        job = (await client.get("/_sim/jobs/exona?data=1")).json()["jobs"][scan["id"]]
        assert job["ended_at"] - job["created_at"] == pytest.approx(50)
        assert job["observed_at"] is None  # no client has seen it end
        assert job["data"]["company_name"] == SCAN["company_name"]
        await client.get(f"{SCANS}/{scan['id']}", headers=BEARER)
        clock.advance(5)
        await client.get(f"{SCANS}/{scan['id']}", headers=BEARER)
        job = (await client.get("/_sim/jobs/exona")).json()["jobs"][scan["id"]]
        assert job["observed_at"] - job["created_at"] == pytest.approx(60)


async def test_submit_rate_spans_first_to_last_submit() -> None:
    clock = ManualClock()
    async with simulator(clock=clock) as (client, _):
        stats = (await client.get("/_sim/stats")).json()["exona"]
        assert (stats["submit_span_s"], stats["submits_per_s"]) == (0.0, None)
        scan = (await client.post(SCANS, json=SCAN, headers=BEARER)).json()
        stats = (await client.get("/_sim/stats")).json()["exona"]
        assert (stats["submit_span_s"], stats["submits_per_s"]) == (0.0, None)
        for _ in range(3):
            clock.advance(2)
            await client.post(SCANS, json=SCAN, headers=BEARER)
        clock.advance(5)
        await client.get(f"{SCANS}/{scan['id']}", headers=BEARER)  # a poll is not a submit
        await client.post(SCANS, json=SCAN)  # nor is a refused one (401)

        stats = (await client.get("/_sim/stats")).json()["exona"]
        assert (stats["submits"], stats["submit_span_s"], stats["submits_per_s"]) == (4, 6.0, 4 / 6)


async def test_same_seed_same_run() -> None:
    async def run(seed: int) -> list[Any]:
        async with simulator(seed=seed, failure_rate=0.5) as (client, state):
            for _ in range(5):
                await client.post(SCANS, json=SCAN, headers=BEARER)
            jobs = state.providers["exona"].jobs.values()
            return [(job.id, round(job.end - job.created, 6), job.terminal) for job in jobs]

    assert await run(1) == await run(1)
    assert await run(1) != await run(2)


def test_ledger_tracks_ten_thousand_jobs_without_timers() -> None:
    ledger = JobLedger()
    jobs = []
    for seq in range(10_000):
        end = NEVER if seq % 10 == 0 else 1.0 + seq % 100
        job = Job(f"j{seq}", seq, 0.0, 0.0, (("RUNNING", end),), end, "DONE")
        ledger.add(job, 0.0)
        jobs.append(job)
    assert ledger.in_flight(0.5) == 10_000
    jobs[1].end_now(0.5, "ABORTED")
    ledger.ended_early(jobs[1])
    assert ledger.in_flight(0.5) == 9_999
    assert ledger.in_flight(50.5) == 1_000 + 4_500  # never-ending + ends in 51..100
    assert ledger.in_flight(1e9) == 1_000
    assert ledger.outcomes == {"DONE": 8_999, "ABORTED": 1}
    assert jobs[5].status(0.5) == "RUNNING" and jobs[5].status(6.0) == "DONE"


def test_the_clocks() -> None:
    clocks: list[SimulatorClock] = [RealClock(), ManualClock(5.0)]
    real, manual = clocks
    assert abs(real.time() - time.time()) < 60 and real.monotonic() <= time.monotonic()
    assert (manual.monotonic(), manual.time()) == (5.0, 5.0)
    assert isinstance(manual, ManualClock)
    manual.advance(2.5)
    assert (manual.monotonic(), manual.time()) == (7.5, 7.5)
    with pytest.raises(ValueError, match="backwards"):
        manual.advance(-1)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10, "10"), (10.0, "10"), (0.1, "0.1"), (0.03, "0.03"), (1.5, "1.5"), (0.0001, "0.001")],
)
def test_durations_are_whole_or_decimal_and_never_rounded_down(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


# -- the loopback runner --------------------------------------------------------------


def test_running_simulator_serves_on_loopback_and_stops() -> None:
    with running_simulator(SimulatorConfig(time_scale=0.001, seed=7)) as sim:
        host, port = sim.url.removeprefix("http://").split(":")
        assert host == "127.0.0.1"
        assert sim.base_url("exona") == f"{sim.url}/exona/api/v1"
        assert sim.base_url("generic") == f"{sim.url}/generic/v2"
        with pytest.raises(ValueError, match="unknown provider"):
            sim.base_url("nope")

        with httpx.Client(headers=BEARER) as client:
            created = client.post(f"{sim.base_url('exona')}/scans", json=SCAN)
            assert created.status_code == 201
            time.sleep(0.13)  # 120 simulated seconds at most
            done = client.get(f"{sim.base_url('exona')}/scans/{created.json()['id']}")
            assert done.json()["status"] == "completed"

            sim.state.config = sim.state.config.model_copy(update={"api_key": "rotated"})
            assert client.post(f"{sim.base_url('exona')}/scans", json=SCAN).status_code == 401
        stats = sim.stats()["exona"]
        assert stats["submits"] == 1 and stats["http_401"] == 1

    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
        pass


def test_the_listening_socket_says_it_is_tcp_so_asyncio_disables_nagle() -> None:
    # Without IPPROTO_TCP, asyncio leaves Nagle on and every two-part response
    # stalls ~40 ms on the client's delayed ACK.
    with bind_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_stats_and_reset_are_safe_from_another_thread() -> None:
    clock = ManualClock()
    with running_simulator(clock=clock) as sim:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        body = {
            "request_type": "callback",
            "callback_url": f"http://127.0.0.1:{port}/hook",
            "input": {"prompt": "p"},
        }
        url = f"{sim.base_url('apixo')}/generateTask/suno"
        for _ in range(2):
            assert httpx.post(url, json=body, headers=BEARER).status_code == 200
            assert sim.state.stats()["apixo"]["jobs_in_flight"] == 1
            sim.state.reset()  # from this thread, while the server's callback loop waits
        httpx.post(url, json=body, headers=BEARER)
        clock.advance(121)  # every task is due: only the last one's callback is still pending
        deadline = time.monotonic() + 2
        while sim.stats()["apixo"]["callbacks_failed"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # two more ticks of the callback loop
        stats = sim.stats()["apixo"]
        assert (stats["submits"], stats["callbacks_failed"], stats["callbacks_sent"]) == (1, 1, 0)


async def test_async_runner() -> None:
    async with arunning_simulator(SimulatorConfig(time_scale=0.001)) as sim:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{sim.url}/_sim/health")
            assert response.json()["status"] == "ok"
        assert sim.stats()["twyn"]["submits"] == 0
        url = sim.url
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/_sim/health")


# -- the command line -----------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    """Parse ``argv`` the way ``prefect-pollers simulator`` would."""
    parser = argparse.ArgumentParser(prog="prefect-pollers")
    add_simulator_command(parser.add_subparsers(dest="command"))
    return parser.parse_args(["simulator", *argv])


def test_cli_builds_the_config_from_a_file_and_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "sim.json"
    config_file.write_text(json.dumps({"seed": 3, "failure_rate": 0.2, "rate_limit": 10}))
    args = parse(
        "--port",
        "0",
        "--config",
        str(config_file),
        "--time-scale",
        "0.01",
        "--failure-rate",
        "0.5",
        "--fault",
        '{"kind": "http_503", "rate": 0.1}',
    )
    config = build_config(args)
    assert (config.seed, config.rate_limit, config.time_scale) == (3, 10, 0.01)
    assert config.failure_rate == 0.5
    assert config.faults[0].kind == "http_503"


def test_cli_refuses_a_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_simulator_cli(parse("--failure-rate", "2")) == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_cli_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert run_simulator_cli(parse("--port", str(taken.getsockname()[1]))) == 1
    assert "cannot bind" in capsys.readouterr().err


@pytest.mark.slow  # 12 s: a subprocess serves
def test_the_simulator_command_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect_pollers.cli",
            "simulator",
            "--port",
            "0",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"DO_NOT_TRACK": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[2]
        assert httpx.get(f"{url}/_sim/health", timeout=5).json()["status"] == "ok"
        assert url in process.stdout.readline()  # the first provider's base URL
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
