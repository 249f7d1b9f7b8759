"""Fault injection: every kind, the schedules, and the transport-level ones on a real server."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from prefect_pollers.testing.simulator import (
    FaultRule,
    ManualClock,
    SimulatedReset,
    SimulatorConfig,
    running_simulator,
)
from tests.sim_client import BEARER, SCAN, SCANS, simulator


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_http_errors_on_submit_create_no_job(status: int) -> None:
    rule = FaultRule(
        provider="exona", route="submit", kind=f"http_{status}", rate=1, retry_after=30
    )
    async with simulator(rule, time_scale=0.1) as (client, state):
        response = await client.post(SCANS, json=SCAN, headers=BEARER)
        assert response.status_code == status
        assert response.headers["Retry-After"] == "3"
        assert response.json()["error"]["code"] == "server_error"
        stats = state.stats()["exona"]
        assert stats["submits"] == 0 and stats["faults_injected"] == {f"http_{status}": 1}


async def test_http_error_without_retry_after_sends_none() -> None:
    async with simulator(FaultRule(kind="http_500", rate=1)) as (client, _):
        response = await client.post(SCANS, json=SCAN, headers=BEARER)
        assert response.status_code == 500 and "Retry-After" not in response.headers


async def test_apixo_faults_use_its_envelope() -> None:
    async with simulator(FaultRule(kind="http_503", first=1)) as (client, _):
        response = await client.post(
            "/apixo/api/v1/generateTask/flux-2",
            json={"request_type": "async", "input": {"prompt": "p"}},
            headers=BEARER,
        )
        assert response.status_code == 503 and response.json()["code"] == 503


async def test_burst_429_sends_a_scaled_retry_after_and_is_counted() -> None:
    rule = FaultRule(provider="twyn", kind="burst_429", rate=1, retry_after=2)
    async with simulator(rule, time_scale=0.05) as (client, state):
        response = await client.post(
            "/twyn/v1/simulations", json={"scenario": "s"}, headers={"X-API-Key": "sim-key"}
        )
        assert response.status_code == 429 and response.headers["Retry-After"] == "0.1"
        stats = state.stats()["twyn"]
        assert stats["http_429"] == 1 and stats["submits"] == 0


async def test_malformed_json_is_a_truncated_200() -> None:
    async with simulator(FaultRule(kind="malformed_json", rate=1)) as (client, state):
        response = await client.post(SCANS, json=SCAN, headers=BEARER)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            response.json()
        assert state.stats()["exona"]["submits"] == 0


async def test_html_is_a_502_error_page() -> None:
    async with simulator(FaultRule(kind="html", rate=1)) as (client, _):
        response = await client.post(SCANS, json=SCAN, headers=BEARER)
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("text/html")
        assert "<html>" in response.text


async def test_empty_is_a_200_without_body() -> None:
    async with simulator(FaultRule(kind="empty", rate=1)) as (client, state):
        response = await client.post(SCANS, json=SCAN, headers=BEARER)
        assert response.status_code == 200 and response.content == b""
        assert state.stats()["exona"]["faults_injected"] == {"empty": 1}


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("missing_field", lambda scan: "status" not in scan),
        ("mistyped_field", lambda scan: scan["status"] == 42),
        ("unknown_status", lambda scan: scan["status"] == "REBALANCING"),
    ],
)
async def test_data_shape_faults_rewrite_the_status_only(kind: str, check: Any) -> None:
    clock = ManualClock()
    rule = FaultRule(kind=kind, first=1)
    async with simulator(rule, clock=clock) as (client, state):
        created = await client.post(SCANS, json=SCAN, headers=BEARER)
        assert created.json()["status"] == "queued"  # not a status route: untouched
        clock.advance(121)
        broken = await client.get(f"{SCANS}/{created.json()['id']}", headers=BEARER)
        assert broken.status_code == 200 and check(broken.json())
        assert broken.json()["id"] == created.json()["id"]
        stats = state.stats()["exona"]
        assert stats["unobserved_terminal_jobs"] == 1  # the client never saw "completed"
        assert stats["faults_injected"] == {kind: 1}

        clock.advance(10)
        fine = await client.get(f"{SCANS}/{created.json()['id']}", headers=BEARER)
        assert fine.json()["status"] == "completed"
        assert state.stats()["exona"]["unobserved_terminal_jobs"] == 0


@pytest.mark.parametrize(
    ("provider", "submit", "status_path"),
    [
        ("apixo", "/apixo/api/v1/generateTask/suno", ("data", "state")),
        ("generic", "/generic/v2/tasks", ("task", "state", "name")),
    ],
)
async def test_unknown_status_finds_each_providers_status_field(
    provider: str, submit: str, status_path: tuple[str, ...]
) -> None:
    rule = FaultRule(provider=provider, kind="unknown_status", rate=1)
    headers = BEARER | {"X-Auth-Token": "sim-key"}
    body = (
        {"request_type": "async", "input": {"prompt": "p"}}
        if provider == "apixo"
        else {"task": {"kind": "k", "params": {}}}
    )
    async with simulator(rule) as (client, _):
        created = (await client.post(submit, json=body, headers=headers)).json()
        if provider == "apixo":
            url = f"/apixo/api/v1/checkStatus/suno/{created['data']['taskId']}"
        else:
            url = f"/generic/v2/tasks/{created['task']['uid']}"
        value = (await client.get(url, headers=headers)).json()
        for key in status_path:
            value = value[key]
        assert value == "REBALANCING"


async def test_first_and_every_schedules() -> None:
    rules = (
        FaultRule(provider="exona", route="submit", kind="http_503", first=2),
        FaultRule(provider="exona", route="submit", kind="http_502", every=3),
    )
    async with simulator(*rules) as (client, state):
        codes = [
            (await client.post(SCANS, json=SCAN, headers=BEARER)).status_code for _ in range(7)
        ]
        assert codes == [503, 503, 502, 201, 201, 502, 201]
        stats = state.stats()["exona"]
        assert stats["submits"] == 3
        assert stats["faults_injected"] == {"http_503": 2, "http_502": 2}


async def test_rate_is_reproducible_from_the_seed() -> None:
    async def codes(seed: int) -> list[int]:
        rule = FaultRule(provider="exona", kind="http_500", rate=0.5)
        async with simulator(rule, seed=seed) as (client, _):
            return [
                (await client.post(SCANS, json=SCAN, headers=BEARER)).status_code for _ in range(40)
            ]

    first = await codes(3)
    assert first == await codes(3)
    assert 5 < first.count(500) < 35


async def test_rules_only_match_their_provider_and_route() -> None:
    rules = (
        FaultRule(provider="twyn", kind="http_500", rate=1.0),
        FaultRule(provider="exona", route="status", kind="http_500", rate=1.0),
    )
    async with simulator(*rules) as (client, state):
        created = await client.post(SCANS, json=SCAN, headers=BEARER)
        assert created.status_code == 201
        assert (
            await client.get(f"{SCANS}/{created.json()['id']}", headers=BEARER)
        ).status_code == (500)
        assert state.stats()["exona"]["status_calls"] == 0


async def test_reset_in_process_raises_a_transport_error_and_creates_no_job() -> None:
    async with simulator(FaultRule(kind="reset", first=1)) as (client, state):
        with pytest.raises(httpx.TransportError) as caught:
            await client.post(SCANS, json=SCAN, headers=BEARER)
        assert isinstance(caught.value, SimulatedReset)
        assert state.stats()["exona"]["submits"] == 0
        assert (await client.post(SCANS, json=SCAN, headers=BEARER)).status_code == 201


async def test_reset_after_create_makes_a_job_the_client_never_hears_of() -> None:
    rule = FaultRule(route="submit", kind="reset_after_create", first=1)
    async with simulator(rule) as (client, state):
        key = {"Idempotency-Key": "order-42"}
        with pytest.raises(httpx.TransportError):
            await client.post(SCANS, json=SCAN, headers=BEARER | key)
        retried = await client.post(SCANS, json=SCAN, headers=BEARER | key)
        assert retried.status_code == 201
        stats = state.stats()["exona"]
        assert stats["submits"] == 2 and stats["submits_per_idempotency_key"] == {"order-42": 2}
        assert stats["duplicate_submits"] == 1
        assert stats["faults_injected"] == {"reset_after_create": 1}
        assert stats["faults_on_submit"] == {"reset_after_create": 1}


async def test_never_finish_rate_keeps_jobs_running_forever() -> None:
    clock = ManualClock()
    async with simulator(clock=clock, never_finish_rate=1.0) as (client, state):
        created = await client.post(SCANS, json=SCAN, headers=BEARER)
        clock.advance(10 * 86_400)
        body = (await client.get(f"{SCANS}/{created.json()['id']}", headers=BEARER)).json()
        assert body["status"] == "analyzing"
        assert state.stats()["exona"]["jobs_in_flight"] == 1


def test_reset_on_a_real_server_drops_the_connection() -> None:
    rule = FaultRule(provider="exona", route="status", kind="reset", first=1)
    with running_simulator(SimulatorConfig(time_scale=0.001, faults=[rule])) as sim:
        base = sim.base_url("exona")
        with httpx.Client(headers=BEARER) as client:
            created = client.post(f"{base}/scans", json=SCAN)
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(f"{base}/scans/{created.json()['id']}")
            assert client.get(f"{base}/scans/{created.json()['id']}").status_code == 200
        stats = sim.stats()["exona"]
        assert stats["faults_injected"] == {"reset": 1}
        assert stats["faults_on_submit"] == {}  # a status poll's fault is not a submit's


def test_slow_on_a_real_server_delays_the_answer() -> None:
    rule = FaultRule(provider="generic", kind="slow", delay_s=0.3, first=2)
    with running_simulator(SimulatorConfig(time_scale=0.001, faults=[rule])) as sim:
        url = f"{sim.base_url('generic')}/tasks"
        body = {"task": {"kind": "k", "params": {}}}
        with httpx.Client(headers={"X-Auth-Token": "sim-key"}) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.post(url, json=body, timeout=0.1)
            started = time.monotonic()
            assert client.post(url, json=body).status_code == 201
            assert time.monotonic() - started >= 0.3
            assert client.post(url, json=body).status_code == 201  # the rule is spent
        stats = sim.stats()["generic"]
        assert stats["faults_injected"] == stats["faults_on_submit"] == {"slow": 2}
