"""Each simulated provider against its documented contract, in process, on a manual clock."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from prefect_pollers.testing.simulator import ManualClock
from tests.sim_client import BEARER, simulator

TWYN = {"X-API-Key": "sim-key"}
GENERIC = {"X-Auth-Token": "sim-key"}
EXONA = "/exona/api/v1"
APIXO = "/apixo/api/v1"
MODELROUTE = "/modelroute/v1"


# -- Exona ----------------------------------------------------------------------------


async def test_exona_scan_walks_its_phases_to_a_completed_result() -> None:
    clock = ManualClock()
    async with simulator(clock=clock, exona_duration=(100, 100)) as (client, state):
        created = await client.post(
            f"{EXONA}/scans",
            json={"company_name": "Acme AI Ltd", "company_website": "https://acme.ai"},
            headers=BEARER,
        )
        assert created.status_code == 201
        scan = created.json()
        assert scan["id"].startswith("scan_") and scan["status"] == "queued"
        assert scan["company_name"] == "Acme AI Ltd" and scan["created_at"].endswith("Z")

        seen = []
        for step in (0, 15, 60, 25):
            clock.advance(step)
            response = await client.get(f"{EXONA}/scans/{scan['id']}", headers=BEARER)
            assert response.headers["Retry-After"] == "10"
            seen.append(response.json()["status"])
        assert seen == ["queued", "researching", "analyzing", "completed"]

        result = response.json()["result"]
        assert result["company_website"] == "https://acme.ai"
        assert result["risk_assessment"]["overall_risk_level"] in {
            "low",
            "medium",
            "high",
            "critical",
        }
        assert 0 <= result["risk_assessment"]["score"] <= 100
        assert result["sources"] and result["scanned_at"].endswith("Z")
        stats = state.stats()["exona"]
        assert stats["outcomes"] == {"completed": 1}
        assert stats["status_calls"] == 4 and stats["unobserved_terminal_jobs"] == 0


async def test_exona_invalid_host_fails_with_website_unreachable() -> None:
    clock = ManualClock()
    async with simulator(clock=clock) as (client, _):
        scan = (
            await client.post(
                f"{EXONA}/scans",
                json={"company_name": "Ghost", "company_website": "https://ghost.invalid"},
                headers=BEARER,
            )
        ).json()
        clock.advance(121)
        body = (await client.get(f"{EXONA}/scans/{scan['id']}", headers=BEARER)).json()
        assert body["status"] == "failed"
        assert body["error"]["code"] == "website_unreachable" and body["error"]["message"]
        assert "result" not in body


async def test_exona_failure_rate_fails_with_research_failed() -> None:
    clock = ManualClock()
    async with simulator(clock=clock, failure_rate=1.0) as (client, _):
        scan = (
            await client.post(
                f"{EXONA}/scans",
                json={"company_name": "Acme", "company_website": "acme.ai"},
                headers=BEARER,
            )
        ).json()
        clock.advance(121)
        body = (await client.get(f"{EXONA}/scans/{scan['id']}", headers=BEARER)).json()
        assert (body["status"], body["error"]["code"]) == ("failed", "research_failed")


async def test_exona_answers_from_cache_within_max_age_days() -> None:
    clock = ManualClock()
    async with simulator(clock=clock) as (client, state):
        first = await client.post(
            f"{EXONA}/scans",
            json={"company_name": "Acme", "company_website": "https://acme.ai"},
            headers=BEARER,
        )
        clock.advance(121)
        done = (await client.get(f"{EXONA}/scans/{first.json()['id']}", headers=BEARER)).json()

        hit = await client.post(
            f"{EXONA}/scans",
            json={"company_name": "Acme", "company_website": "HTTPS://ACME.AI", "max_age_days": 1},
            headers=BEARER,
        )
        assert hit.status_code == 200
        body = hit.json()
        assert body["status"] == "completed" and body["cached"] is True
        assert body["result"]["risk_assessment"] == done["result"]["risk_assessment"]
        assert body["result"]["scanned_at"] == done["result"]["scanned_at"]

        no_max_age = await client.post(
            f"{EXONA}/scans",
            json={"company_name": "Acme", "company_website": "https://acme.ai"},
            headers=BEARER,
        )
        assert (no_max_age.status_code, no_max_age.json()["status"]) == (201, "queued")

        clock.advance(2 * 86_400)
        too_old = await client.post(
            f"{EXONA}/scans",
            json={"company_name": "Acme", "company_website": "https://acme.ai", "max_age_days": 1},
            headers=BEARER,
        )
        assert too_old.status_code == 201
        assert state.stats()["exona"]["submits"] == 4


async def test_exona_cache_hit_rate_answers_at_once() -> None:
    async with simulator(cache_hit_rate=1.0) as (client, state):
        response = await client.post(
            f"{EXONA}/scans",
            json={"company_name": "Zenith ML", "company_website": "https://zenith.ml"},
            headers=BEARER,
        )
        assert response.status_code == 200
        assert response.json()["result"]["company_name"] == "Zenith ML"
        stats = state.stats()["exona"]
        assert stats["outcomes"] == {"completed": 1} and stats["unobserved_terminal_jobs"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"company_website": "https://a.io"}, "company_name"),
        ({"company_name": "", "company_website": "https://a.io"}, "company_name"),
        ({"company_name": "A", "company_website": 7}, "company_website"),
        ({"company_name": "A", "company_website": "a.io", "max_age_days": -1}, "max_age_days"),
        ({"company_name": "A", "company_website": "a.io", "max_age_days": True}, "max_age_days"),
        ({"company_name": "A", "company_website": "a.io", "max_age_days": "3"}, "max_age_days"),
        (["not", "an", "object"], "body"),
    ],
)
async def test_exona_rejects_malformed_scans_with_422(body: Any, field: str) -> None:
    async with simulator() as (client, state):
        response = await client.post(f"{EXONA}/scans", json=body, headers=BEARER)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "validation_error" and error["message"].startswith(f"{field}:")
        assert state.stats()["exona"]["http_422"] == 1
        assert state.stats()["exona"]["submits"] == 0


async def test_exona_rejects_invalid_json_with_422() -> None:
    async with simulator() as (client, _):
        response = await client.post(
            f"{EXONA}/scans",
            content=b'{"company_name": ',
            headers=BEARER | {"Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert response.json()["error"]["message"].startswith("body: not valid JSON")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, TWYN])
async def test_exona_requires_its_bearer_key(headers: dict[str, str]) -> None:
    async with simulator() as (client, state):
        response = await client.post(
            f"{EXONA}/scans", json={"company_name": "A", "company_website": "a.io"}, headers=headers
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert state.stats()["exona"]["http_401"] == 1
        assert state.stats()["exona"]["submits"] == 0


async def test_exona_unknown_scan_is_404() -> None:
    async with simulator() as (client, _):
        response = await client.get(f"{EXONA}/scans/scan_nope", headers=BEARER)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


async def test_exona_early_poll_gets_429_with_the_time_left() -> None:
    clock = ManualClock()
    async with simulator(clock=clock) as (client, state):
        scan = (
            await client.post(
                f"{EXONA}/scans",
                json={"company_name": "A", "company_website": "a.io"},
                headers=BEARER,
            )
        ).json()
        url = f"{EXONA}/scans/{scan['id']}"
        assert (await client.get(url, headers=BEARER)).status_code == 200
        clock.advance(4)
        early = await client.get(url, headers=BEARER)
        assert early.status_code == 429 and early.headers["Retry-After"] == "6"
        clock.advance(5.2)  # 9.2 s: inside the 10 % tolerance of the 10 s Retry-After
        assert (await client.get(url, headers=BEARER)).status_code == 200
        stats = state.stats()["exona"]
        assert stats["http_429"] == 1
        assert stats["status_calls"] == 2 and stats["status_calls_per_job"] == {scan["id"]: 2}


async def test_exona_retry_after_is_scaled_and_decimal() -> None:
    async with simulator(clock=ManualClock(), time_scale=0.01) as (client, _):
        scan = (
            await client.post(
                f"{EXONA}/scans",
                json={"company_name": "A", "company_website": "a.io"},
                headers=BEARER,
            )
        ).json()
        response = await client.get(f"{EXONA}/scans/{scan['id']}", headers=BEARER)
        assert response.headers["Retry-After"] == "0.1"


# -- Twyn -----------------------------------------------------------------------------


async def test_twyn_simulation_runs_through_its_three_phases() -> None:
    clock = ManualClock()
    durations = {
        "twyn_config_duration": (60, 60),
        "twyn_simulation_duration": (120, 120),
        "twyn_analysis_duration": (60, 60),
    }
    async with simulator(clock=clock, **durations) as (client, state):
        created = await client.post(
            "/twyn/v1/simulations",
            json={"scenario": "pricing", "config": {"iterations": 500}},
            headers=TWYN,
        )
        assert created.status_code == 201
        sim = created.json()
        assert sim["simulation_id"].startswith("sim_")
        assert (sim["status"], sim["scenario"]) == ("PROCESSING_CONFIG", "pricing")

        seen = []
        for step in (0, 90, 120, 90):
            clock.advance(step)
            response = await client.get(
                f"/twyn/v1/simulations/{sim['simulation_id']}", headers=TWYN
            )
            assert "Retry-After" not in response.headers
            seen.append((response.json()["status"], response.json()["progress"]))
        assert seen == [
            ("PROCESSING_CONFIG", 0.0),
            ("PROCESSING_SIMULATION", 0.375),
            ("PROCESSING_ANALYSIS", 0.875),
            ("COMPLETED_ANALYSIS", 1.0),
        ]
        results = response.json()["results"]
        assert results["iterations"] == 500
        assert results["p95_outcome"] > results["mean_outcome"]
        assert state.stats()["twyn"]["outcomes"] == {"COMPLETED_ANALYSIS": 1}


async def test_twyn_failing_scenario_ends_failed_with_an_error_log() -> None:
    clock = ManualClock()
    async with simulator(clock=clock) as (client, _):
        sim = (
            await client.post("/twyn/v1/simulations", json={"scenario": "will-FAIL"}, headers=TWYN)
        ).json()
        clock.advance(480)
        body = (
            await client.get(f"/twyn/v1/simulations/{sim['simulation_id']}", headers=TWYN)
        ).json()
        assert body["status"] == "FAILED"
        assert "will-FAIL" in body["error_log"] and body["progress"] < 1.0
        assert "results" not in body


async def test_twyn_polls_under_one_second_apart_get_429() -> None:
    clock = ManualClock()
    async with simulator(clock=clock) as (client, state):
        sim = (
            await client.post("/twyn/v1/simulations", json={"scenario": "s"}, headers=TWYN)
        ).json()
        url = f"/twyn/v1/simulations/{sim['simulation_id']}"
        assert (await client.get(url, headers=TWYN)).status_code == 200
        clock.advance(0.5)
        early = await client.get(url, headers=TWYN)
        assert early.status_code == 429 and early.headers["Retry-After"] == "0.5"
        clock.advance(0.45)  # the 1 s floor is documented, so no tolerance applies
        assert (await client.get(url, headers=TWYN)).status_code == 429
        clock.advance(0.05)
        assert (await client.get(url, headers=TWYN)).status_code == 200
        stats = state.stats()["twyn"]
        assert (stats["status_calls"], stats["http_429"]) == (2, 2)


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (BEARER, {"scenario": "s"}, 401),
        ({"X-API-Key": "nope"}, {"scenario": "s"}, 401),
        (TWYN, {}, 422),
        (TWYN, {"scenario": "  "}, 422),
        (TWYN, {"scenario": "s", "config": [1]}, 422),
    ],
)
async def test_twyn_refuses_bad_key_and_bad_bodies(
    headers: dict[str, str], body: dict[str, Any], status: int
) -> None:
    async with simulator() as (client, state):
        response = await client.post("/twyn/v1/simulations", json=body, headers=headers)
        assert response.status_code == status
        assert "error" in response.json()
        assert state.stats()["twyn"]["submits"] == 0


async def test_twyn_unknown_simulation_is_404() -> None:
    async with simulator() as (client, _):
        response = await client.get("/twyn/v1/simulations/sim_missing", headers=TWYN)
        assert response.status_code == 404


# -- APIXO ----------------------------------------------------------------------------


async def test_apixo_task_goes_from_waiting_to_success() -> None:
    clock = ManualClock()
    async with simulator(clock=clock, apixo_durations={"nano-banana": (10, 10)}) as (client, state):
        created = await client.post(
            f"{APIXO}/generateTask/nano-banana",
            json={"request_type": "async", "input": {"prompt": "a cat"}},
            headers=BEARER,
        )
        assert created.status_code == 200
        envelope = created.json()
        assert (envelope["code"], envelope["msg"]) == (200, "success")
        task_id = envelope["data"]["taskId"]
        assert task_id.startswith("task_") and envelope["data"]["model"] == "nano-banana"

        url = f"{APIXO}/checkStatus/nano-banana/{task_id}"
        states = []
        for step in (0, 5, 5):
            clock.advance(step)
            states.append((await client.get(url, headers=BEARER)).json()["data"]["state"])
        assert states == ["waiting", "generating", "success"]
        data = (await client.get(url, headers=BEARER)).json()["data"]
        urls = json.loads(data["resultJson"])["resultUrls"]
        assert urls and urls[0].endswith(".png")
        assert state.stats()["apixo"]["outcomes"] == {"success": 1}


async def test_apixo_durations_follow_the_model() -> None:
    clock = ManualClock()
    async with simulator(clock=clock) as (client, _):
        ids = {}
        for model in ("sora-2", "some-new-model"):
            response = await client.post(
                f"{APIXO}/generateTask/{model}",
                json={"request_type": "async", "input": {"prompt": "p"}},
                headers=BEARER,
            )
            ids[model] = response.json()["data"]["taskId"]

        async def state_of(model: str) -> str:
            url = f"{APIXO}/checkStatus/{model}/{ids[model]}"
            return (await client.get(url, headers=BEARER)).json()["data"]["state"]

        clock.advance(59)  # sora-2 takes 60-300 s, an unknown model 10-60 s
        assert await state_of("sora-2") != "success"
        clock.advance(2)
        assert await state_of("some-new-model") == "success"
        clock.advance(240)
        assert await state_of("sora-2") == "success"


async def test_apixo_prompt_with_fail_fails_with_content_policy() -> None:
    clock = ManualClock()
    async with simulator(clock=clock) as (client, _):
        created = await client.post(
            f"{APIXO}/generateTask/flux-2",
            json={"request_type": "async", "input": {"prompt": "please fail"}},
            headers=BEARER,
        )
        clock.advance(40)
        task_id = created.json()["data"]["taskId"]
        response = await client.get(f"{APIXO}/checkStatus/flux-2/{task_id}", headers=BEARER)
        data = response.json()["data"]
        assert (data["state"], data["failCode"]) == ("failed", "CONTENT_POLICY")
        assert data["failMsg"] and "resultJson" not in data


@pytest.mark.parametrize(
    ("headers", "body", "status", "field"),
    [
        ({}, {"request_type": "async", "input": {"prompt": "p"}}, 401, None),
        (BEARER, {"input": {"prompt": "p"}}, 422, "request_type"),
        (BEARER, {"request_type": "sync", "input": {"prompt": "p"}}, 422, "request_type"),
        (BEARER, {"request_type": "async"}, 422, "input"),
        (BEARER, {"request_type": "async", "input": {}}, 422, "input.prompt"),
        (BEARER, {"request_type": "callback", "input": {"prompt": "p"}}, 422, "callback_url"),
        (
            BEARER,
            {
                "request_type": "callback",
                "callback_url": "https://example.com/hook",
                "input": {"prompt": "p"},
            },
            422,
            "callback_url",
        ),
    ],
)
async def test_apixo_errors_use_its_envelope(
    headers: dict[str, str], body: dict[str, Any], status: int, field: str | None
) -> None:
    async with simulator() as (client, state):
        response = await client.post(f"{APIXO}/generateTask/flux-2", json=body, headers=headers)
        assert response.status_code == status
        envelope = response.json()
        assert envelope["code"] == status and "error" not in envelope
        if field is not None:
            assert envelope["msg"].startswith(f"{field}:")
        assert state.stats()["apixo"]["submits"] == 0


async def test_apixo_unknown_task_or_wrong_model_is_404() -> None:
    async with simulator() as (client, _):
        created = await client.post(
            f"{APIXO}/generateTask/suno",
            json={"request_type": "async", "input": {"prompt": "p"}},
            headers=BEARER,
        )
        task_id = created.json()["data"]["taskId"]
        for url in (f"{APIXO}/checkStatus/suno/task_nope", f"{APIXO}/checkStatus/flux-2/{task_id}"):
            response = await client.get(url, headers=BEARER)
            assert response.status_code == 404 and response.json()["code"] == 404


class _Receiver(BaseHTTPRequestHandler):
    """Records each JSON POST it receives."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def callback_receiver() -> Iterator[Any]:
    """A tiny webhook receiver on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def wait_until(condition: Any, timeout: float = 2.0) -> None:
    """Poll ``condition()`` until it is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_apixo_callback_mode_posts_the_task_data_when_done() -> None:
    with callback_receiver() as receiver:
        host, port = receiver.server_address[:2]
        async with simulator(time_scale=0.002) as (client, state):
            created = await client.post(
                f"{APIXO}/generateTask/nano-banana",
                json={
                    "request_type": "callback",
                    "callback_url": f"http://{host}:{port}/hook",
                    "input": {"prompt": "a cat"},
                },
                headers=BEARER,
            )
            task_id = created.json()["data"]["taskId"]
            await wait_until(lambda: receiver.received)
            await wait_until(lambda: state.stats()["apixo"]["callbacks_sent"] == 1)
        (payload,) = receiver.received
        assert (payload["taskId"], payload["state"]) == (task_id, "success")
        assert json.loads(payload["resultJson"])["resultUrls"]
        stats = state.stats()["apixo"]
        assert stats["callbacks_failed"] == 0 and stats["unobserved_terminal_jobs"] == 0
        assert stats["status_calls"] == 0


async def test_apixo_undeliverable_callback_is_counted_as_failed() -> None:
    with callback_receiver() as receiver:
        host, port = receiver.server_address[:2]
    async with simulator(time_scale=0.001) as (client, state):
        await client.post(
            f"{APIXO}/generateTask/nano-banana",
            json={
                "request_type": "callback",
                "callback_url": f"http://{host}:{port}/gone",
                "input": {"prompt": "p"},
            },
            headers=BEARER,
        )
        await wait_until(lambda: state.stats()["apixo"]["callbacks_failed"] == 1)
        stats = state.stats()["apixo"]
        assert stats["callbacks_sent"] == 0 and stats["unobserved_terminal_jobs"] == 1


# -- ModelRoute -----------------------------------------------------------------------

WINDOW_START = 1_700_000_040.0  # a multiple of 60: a rate-limit window starts here


async def test_modelroute_execution_completes_and_serves_its_result() -> None:
    clock = ManualClock(WINDOW_START)
    async with simulator(clock=clock, modelroute_duration=(8, 8)) as (client, state):
        created = await client.post(
            f"{MODELROUTE}/executions",
            json={"model": "flux-schnell", "input": {"prompt": "a red fox"}},
            headers=BEARER,
        )
        assert created.status_code == 202
        execution = created.json()
        assert execution["id"].startswith("exec_") and execution["status"] == "QUEUED"
        url = f"{MODELROUTE}/executions/{execution['id']}"

        early = await client.get(f"{url}/result", headers=BEARER)
        assert early.status_code == 409 and early.json()["error"]["message"]

        seen = []
        for step in (0, 3, 5):
            clock.advance(step)
            body = (await client.get(url, headers=BEARER)).json()
            seen.append(body["status"])
        assert seen == ["QUEUED", "RUNNING", "COMPLETED"]
        assert body["model"] == "flux-schnell" and body["created_at"].endswith("Z")

        result = (await client.get(f"{url}/result", headers=BEARER)).json()
        assert set(result) == {"execution_id", "status", "output", "usage", "cost", "latency_ms"}
        assert (result["execution_id"], result["status"]) == (execution["id"], "COMPLETED")
        assert set(result["usage"]) == {"input_tokens", "output_tokens"}
        assert isinstance(result["cost"], str) and float(result["cost"]) > 0
        assert result["latency_ms"] == 8000 and result["output"]["images"]
        assert state.stats()["modelroute"]["outcomes"] == {"COMPLETED": 1}


@pytest.mark.parametrize(
    ("settings", "model", "terminal"),
    [
        ({}, "model-that-will-fail", "FAILED"),
        ({"failure_rate": 1.0}, "m", "FAILED"),
        ({"modelroute_cancel_rate": 1.0}, "m", "CANCELLED"),
        ({"modelroute_expire_rate": 1.0}, "m", "EXPIRED"),
    ],
)
async def test_modelroute_other_terminal_statuses(
    settings: dict[str, Any], model: str, terminal: str
) -> None:
    clock = ManualClock(WINDOW_START)
    async with simulator(clock=clock, modelroute_duration=(10, 10), **settings) as (client, _):
        execution = (
            await client.post(
                f"{MODELROUTE}/executions", json={"model": model, "input": {}}, headers=BEARER
            )
        ).json()
        url = f"{MODELROUTE}/executions/{execution['id']}"
        clock.advance(5)
        midway = (await client.get(url, headers=BEARER)).json()["status"]
        assert midway == ("QUEUED" if terminal == "EXPIRED" else "RUNNING")
        clock.advance(5)
        body = (await client.get(url, headers=BEARER)).json()
        assert body["status"] == terminal
        if terminal == "FAILED":
            assert body["error"]["code"] and body["error"]["message"]
        else:
            assert "error" not in body
        assert (await client.get(f"{url}/result", headers=BEARER)).status_code == 409


async def test_modelroute_rate_limit_headers_and_429_at_the_limit() -> None:
    clock = ManualClock(WINDOW_START)
    async with simulator(clock=clock, rate_limit=5) as (client, state):
        remaining = []
        for _ in range(4):
            response = await client.get(f"{MODELROUTE}/executions/exec_x", headers=BEARER)
            assert response.status_code == 404
            remaining.append(response.headers["X-RateLimit-Remaining"])
            assert response.headers["X-RateLimit-Limit"] == "5"
            assert response.headers["X-RateLimit-Reset"] == "1700000100"
        unauthorized = await client.post(f"{MODELROUTE}/executions", json={}, headers={})
        assert unauthorized.status_code == 401
        assert unauthorized.headers["X-RateLimit-Remaining"] == "4"  # another key's window
        fifth = await client.post(
            f"{MODELROUTE}/executions", json={"model": "m", "input": {}}, headers=BEARER
        )
        assert fifth.status_code == 202
        assert [*remaining, fifth.headers["X-RateLimit-Remaining"]] == ["4", "3", "2", "1", "0"]

        clock.advance(20)
        limited = await client.post(
            f"{MODELROUTE}/executions", json={"model": "m", "input": {}}, headers=BEARER
        )
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "40"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert limited.headers["X-RateLimit-Reset"] == "1700000100"

        clock.advance(40)
        again = await client.get(f"{MODELROUTE}/executions/exec_x", headers=BEARER)
        assert again.status_code == 404 and again.headers["X-RateLimit-Remaining"] == "4"
        stats = state.stats()["modelroute"]
        assert stats["submits"] == 1 and stats["http_429"] == 1
        assert stats["window_max_requests"] == 5


async def test_modelroute_rate_window_is_scaled() -> None:
    clock = ManualClock(WINDOW_START)
    async with simulator(clock=clock, time_scale=0.01, rate_limit=1) as (client, _):
        await client.get(f"{MODELROUTE}/executions/exec_x", headers=BEARER)
        clock.advance(0.25)
        limited = await client.get(f"{MODELROUTE}/executions/exec_x", headers=BEARER)
        assert limited.status_code == 429
        assert limited.headers["X-RateLimit-Reset"] == "1700000040.6"
        assert limited.headers["Retry-After"] == "0.35"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"input": {}}, "model"), ({"model": "m"}, "input"), ({"model": "m", "input": "x"}, "input")],
)
async def test_modelroute_rejects_malformed_executions(body: dict[str, Any], field: str) -> None:
    async with simulator() as (client, _):
        response = await client.post(f"{MODELROUTE}/executions", json=body, headers=BEARER)
        assert response.status_code == 422
        assert response.json()["error"]["message"].startswith(f"{field}:")
        assert "X-RateLimit-Limit" in response.headers


# -- Generic --------------------------------------------------------------------------


async def test_generic_task_finishes_done_with_output() -> None:
    clock = ManualClock()
    async with simulator(clock=clock, generic_duration=(10, 10)) as (client, state):
        created = await client.post(
            "/generic/v2/tasks",
            json={"task": {"kind": "resize", "params": {"w": 3}}},
            headers=GENERIC,
        )
        assert created.status_code == 201
        task = created.json()["task"]
        assert task["uid"].startswith("t-") and task["state"] == {"name": "QUEUED"}
        url = f"/generic/v2/tasks/{task['uid']}"

        assert (await client.get(f"{url}/output", headers=GENERIC)).status_code == 409
        names = []
        for step in (0, 5, 5):
            clock.advance(step)
            response = await client.get(url, headers=GENERIC)
            assert response.headers["Retry-After"] == "5"
            names.append(response.json()["task"]["state"]["name"])
        assert names == ["QUEUED", "WORKING", "DONE"]
        assert "reason" not in response.json()["task"]["state"]

        output = (await client.get(f"{url}/output", headers=GENERIC)).json()["output"]
        assert output["kind"] == "resize" and output["params"] == {"w": 3}
        assert state.stats()["generic"]["outcomes"] == {"DONE": 1}


@pytest.mark.parametrize(
    ("settings", "kind", "terminal", "code"),
    [
        ({}, "fail-fast", "ERROR", "task_error"),
        ({"generic_timeout_rate": 1.0}, "k", "TIMED_OUT", "timed_out"),
    ],
)
async def test_generic_unsuccessful_tasks_carry_a_reason(
    settings: dict[str, Any], kind: str, terminal: str, code: str
) -> None:
    clock = ManualClock()
    async with simulator(clock=clock, **settings) as (client, _):
        task = (
            await client.post(
                "/generic/v2/tasks", json={"task": {"kind": kind, "params": {}}}, headers=GENERIC
            )
        ).json()["task"]
        clock.advance(31)
        state = (await client.get(f"/generic/v2/tasks/{task['uid']}", headers=GENERIC)).json()
        assert state["task"]["state"]["name"] == terminal
        assert state["task"]["state"]["reason"]["code"] == code
        output = await client.get(f"/generic/v2/tasks/{task['uid']}/output", headers=GENERIC)
        assert output.status_code == 409


async def test_generic_abort_ends_a_running_task_and_is_a_no_op_when_finished() -> None:
    clock = ManualClock()
    async with simulator(clock=clock, generic_duration=(10, 10)) as (client, state):
        uids = []
        for _ in range(2):
            created = await client.post(
                "/generic/v2/tasks", json={"task": {"kind": "k", "params": {}}}, headers=GENERIC
            )
            uids.append(created.json()["task"]["uid"])
        clock.advance(3)
        aborted = await client.post(f"/generic/v2/tasks/{uids[0]}/abort", headers=GENERIC)
        assert aborted.status_code == 200
        assert aborted.json()["task"]["state"]["name"] == "ABORTED"
        assert aborted.json()["task"]["state"]["reason"]["code"] == "aborted"
        assert state.stats()["generic"]["jobs_in_flight"] == 1

        clock.advance(20)
        status = await client.get(f"/generic/v2/tasks/{uids[0]}", headers=GENERIC)
        assert status.json()["task"]["state"]["name"] == "ABORTED"
        finished = await client.post(f"/generic/v2/tasks/{uids[1]}/abort", headers=GENERIC)
        assert finished.json()["task"]["state"]["name"] == "DONE"
        missing = await client.post("/generic/v2/tasks/t-nope/abort", headers=GENERIC)
        assert missing.status_code == 404
        stats = state.stats()["generic"]
        assert stats["cancels"] == 2
        assert stats["outcomes"] == {"ABORTED": 1, "DONE": 1}
        assert stats["jobs_in_flight"] == 0 and stats["unobserved_terminal_jobs"] == 0


@pytest.mark.parametrize(
    ("headers", "body", "status", "field"),
    [
        (BEARER, {"task": {"kind": "k", "params": {}}}, 401, None),
        (GENERIC, {"kind": "k", "params": {}}, 422, "task"),
        (GENERIC, {"task": {"params": {}}}, 422, "task.kind"),
        (GENERIC, {"task": {"kind": "k"}}, 422, "task.params"),
        (GENERIC, {"task": {"kind": "k", "params": 5}}, 422, "task.params"),
    ],
)
async def test_generic_refuses_bad_key_and_bad_bodies(
    headers: dict[str, str], body: dict[str, Any], status: int, field: str | None
) -> None:
    async with simulator() as (client, _):
        response = await client.post("/generic/v2/tasks", json=body, headers=headers)
        assert response.status_code == status
        if field is not None:
            assert response.json()["error"]["message"].startswith(f"{field}:")
