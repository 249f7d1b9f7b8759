"""No API key anywhere: every example flow run with a sentinel key, then everything searched.

Each example flow runs against the simulator, whose accepted key is the sentinel, with
a job that fails, and again with a wrong key (which contains the sentinel too). Then
the sentinel is looked for in: the captured logs (DEBUG included, every logger), the
Prefect logs, flow runs (parameters, states) and task runs read back from the API, the
artifacts, the flows' return values, the persisted result files, the job events, the
exceptions (text, repr, traceback, pickle) and the blocks (repr, str, dumps, the saved
block document). It must be found nowhere.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import respx
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from prefect.results import ResultRecord
from prefect.settings import get_current_settings

import prefect_pollers.events.jobs as events_module
from flows.batch_scans import batch_scans
from flows.execution_batch import execution_batch
from flows.generation_grid import generation_grid
from flows.generic_jobs import generic_jobs, simulator_generic_api
from flows.scenario_sweep import scenario_sweep
from prefect_pollers import (
    ApixoCredentials,
    AuthenticationError,
    ExonaCredentials,
    HttpJobApi,
    JobApiCredentials,
    ModelRouteCredentials,
    TwynCredentials,
    run_job,
)
from prefect_pollers.client import shared_client
from prefect_pollers.ledger.settings import LEDGER_FILE
from prefect_pollers.testing.simulator import SimulatorConfig
from tests.constants import SIM_SCALE

pytestmark = pytest.mark.usefixtures("prefect_harness")

SENTINEL = "sk_SENTINEL_7f3a9c"
WRONG_KEY = f"{SENTINEL}-revoked"  # found by the same search


def make_block(provider: str, sim, key: str) -> JobApiCredentials:
    base_url = sim.base_url(provider)
    if provider == "generic":
        return simulator_generic_api(base_url, key, policy_scale=SIM_SCALE)
    block_type = {
        "exona": ExonaCredentials,
        "twyn": TwynCredentials,
        "apixo": ApixoCredentials,
        "modelroute": ModelRouteCredentials,
    }[provider]
    return block_type(api_key=key, base_url=base_url, policy_scale=SIM_SCALE)


# provider -> how to run its example flow with a block (a job of each run fails)
FLOWS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "exona": lambda creds, **kw: batch_scans(
        companies=[
            {"company_name": "Acme AI Ltd", "company_website": "https://acme.ai"},
            {"company_name": "Ghost", "company_website": "https://ghost.invalid"},
        ],
        credentials=creds,
        artifact_key=f"secrets-exona-{uuid.uuid4().hex[:8]}",
        **kw,
    ),
    "twyn": lambda creds, **kw: scenario_sweep(
        scenarios=["heatwave", "will-fail"],
        grid={"days": [1]},
        credentials=creds,
        artifact_key=f"secrets-twyn-{uuid.uuid4().hex[:8]}",
        **kw,
    ),
    "apixo": lambda creds, **kw: generation_grid(
        prompts=["a fox", "fail me"],
        models=["nano-banana"],
        credentials=creds,
        artifact_key=f"secrets-apixo-{uuid.uuid4().hex[:8]}",
        **kw,
    ),
    "modelroute": lambda creds, **kw: execution_batch(
        executions=[
            {"model": "image-gen", "input": {"prompt": "a fox"}},
            {"model": "fail-model", "input": {}},
        ],
        credentials=creds,
        artifact_key=f"secrets-modelroute-{uuid.uuid4().hex[:8]}",
        **kw,
    ),
    "generic": lambda creds, **kw: generic_jobs(
        jobs=[{"kind": "render", "params": {"n": 1}}, {"kind": "fail-export", "params": {}}],
        api=creds,
        artifact_key=f"secrets-generic-{uuid.uuid4().hex[:8]}",
        **kw,
    ),
}


class Haystack:
    """Everything a run left behind, by where it was found."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, value: Any) -> None:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        self.texts.append((where, value if isinstance(value, str) else repr(value)))

    def add_exception(self, where: str, exc: BaseException) -> None:
        self.add(f"{where} str", str(exc))
        self.add(f"{where} repr", repr(exc))
        self.add(f"{where} traceback", "".join(traceback.format_exception(exc)))
        self.add(f"{where} pickle", pickle.dumps(exc))
        if exc.__cause__ is not None:
            self.add_exception(f"{where} cause", exc.__cause__)

    def add_block(self, where: str, block: JobApiCredentials) -> None:
        for form, text in (
            ("repr", repr(block)),
            ("str", str(block)),
            ("json", block.model_dump_json()),
            ("dump", block.model_dump()),
            ("dump-json-mode", block.model_dump(mode="json")),
        ):
            self.add(f"{where} {form}", text)

    def where(self, needle: str) -> list[str]:
        return [where for where, text in self.texts if needle in text]

    def joined(self) -> str:
        return "\n".join(text for _, text in self.texts)


async def read_back(hay: Haystack, flow_run_ids: list[UUID]) -> None:
    """Add what the Prefect API and the result storage hold about these flow runs."""
    await APILogHandler.aflush()
    async with get_client() as client:
        offset = 0
        while page := await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)),
            limit=200,
            offset=offset,
        ):
            hay.add("api logs", "\n".join(f"{log.name} {log.message}" for log in page))
            offset += len(page)
        for flow_run_id in flow_run_ids:
            hay.add("flow run", (await client.read_flow_run(flow_run_id)).model_dump_json())
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
        )
        hay.add("task runs", "\n".join(t.model_dump_json() for t in task_runs))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
        )
        hay.add("artifacts", "\n".join(a.model_dump_json() for a in artifacts))
    storage = Path(get_current_settings().results.local_storage_path)
    for path in await asyncio.to_thread(result_files, storage):
        add_result_file(hay, path)
    ledger = Path(get_current_settings().home) / LEDGER_FILE
    for path in (ledger, ledger.with_name(ledger.name + "-wal")):
        if path.exists():
            hay.add("ledger", path.read_bytes())


def result_files(storage: Path) -> list[Path]:
    """Every file in the result storage directory (none if it does not exist)."""
    return sorted(p for p in storage.rglob("*") if p.is_file()) if storage.exists() else []


def add_result_file(hay: Haystack, path: Path) -> None:
    """A persisted result, raw and decoded (its value is a base64 pickle in the JSON)."""
    data = path.read_bytes()
    hay.add(f"result file {path.name}", data)
    try:
        record = ResultRecord.deserialize(data)
    except Exception:
        return
    hay.add(f"result {path.name}", repr(record.result))
    hay.add(f"result pickle {path.name}", pickle.dumps(record.result))


@pytest.fixture
def hay(caplog, monkeypatch) -> Haystack:
    """A haystack that also gets every log record (DEBUG up) and every job event."""
    for name in (
        "",
        "prefect.flow_runs",
        "prefect.task_runs",
        "prefect_pollers",
        "httpx",
        "httpcore",
    ):
        caplog.set_level(logging.DEBUG, logger=name)
    haystack = Haystack()
    original = events_module.emit_event

    def capture(**event: Any) -> Any:
        haystack.add("event", event)
        return original(**event)

    monkeypatch.setattr(events_module, "emit_event", capture)
    return haystack


def add_logs(hay: Haystack, caplog) -> None:
    """Add every captured log record, formatted (with tracebacks) and as its message."""
    hay.add("captured logs", caplog.text)
    hay.add(
        "captured records",
        "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
    )


def accept_sentinel(sim) -> None:
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE,
        seed=4,
        api_key=SENTINEL,
        twyn_config_duration=(10, 20),
        twyn_simulation_duration=(20, 40),
        twyn_analysis_duration=(10, 20),
    )


@pytest.mark.slow  # 6-12 s per provider
@pytest.mark.parametrize("provider", list(FLOWS))
async def test_example_flow_leaves_the_key_nowhere(sim, hay, caplog, provider):
    accept_sentinel(sim)
    good, wrong = make_block(provider, sim, SENTINEL), make_block(provider, sim, WRONG_KEY)
    hay.add_block("block", good)
    hay.add_block("wrong block", wrong)
    runs = []
    for creds in (good, wrong):
        state = await FLOWS[provider](creds, return_state=True)
        rows = await state.aresult()
        runs.append((state.state_details.flow_run_id, rows))
        hay.add("returned rows", [row.model_dump_json() for row in rows])
    await read_back(hay, [run_id for run_id, _ in runs])
    add_logs(hay, caplog)

    good_rows, wrong_rows = runs[0][1], runs[1][1]
    assert [row.status for row in good_rows] == ["succeeded", "failed"]
    assert {row.status for row in wrong_rows} == {"error"}
    assert all("http=401" in (row.error or "") for row in wrong_rows)
    # the search did see the runs: their logs (DEBUG polls too), artifacts and events
    assert hay.where("poll 1 ->") and [w for w in hay.where("poll 1 ->") if w == "api logs"]
    assert [w for w in hay.where("http=401") if w.startswith("artifacts")]
    assert hay.where("prefect-pollers.job.succeeded")
    assert "ledger" in hay.where('"job_id"')  # the ledger's rows (each a JobRef as JSON)
    assert hay.where(SENTINEL) == []


async def test_a_failing_flow_and_its_exception_leave_the_key_nowhere(sim, hay, caplog):
    accept_sentinel(sim)
    wrong = make_block("exona", sim, WRONG_KEY)

    @flow
    async def scan_one(credentials: ExonaCredentials) -> Any:
        return await run_job(
            credentials,
            {"company_name": "Acme", "company_website": "acme.ai"},
            idempotency_key=f"secret-{uuid.uuid4()}",
        )

    state = await scan_one(wrong, return_state=True)
    assert state.is_failed()
    exc = await state.aresult(raise_on_failure=False)
    assert isinstance(exc, AuthenticationError)
    hay.add_exception("exception", exc)
    hay.add("state", f"{state!r} {state.message} {state.model_dump_json(exclude={'data'})}")
    with pytest.raises(AuthenticationError) as info:
        await scan_one(wrong)
    hay.add_exception("raised", info.value)
    await read_back(hay, [state.state_details.flow_run_id])
    add_logs(hay, caplog)
    assert hay.where("missing or invalid API key")
    assert hay.where(SENTINEL) == []


@pytest.mark.slow  # 5 s
async def test_a_saved_block_and_its_document_leave_the_key_nowhere(sim, hay, caplog):
    accept_sentinel(sim)
    name = f"secrets-{uuid.uuid4().hex[:8]}"
    await make_block("exona", sim, SENTINEL).save(name)
    loaded = await ExonaCredentials.aload(name)
    assert loaded.api_key.get_secret_value() == SENTINEL  # saved and loaded intact
    hay.add_block("loaded block", loaded)
    state = await FLOWS["exona"](name, return_state=True, task_runs="batched")
    rows = await state.aresult()
    assert [row.status for row in rows] == ["succeeded", "failed"]
    hay.add("returned rows", [row.model_dump_json() for row in rows])
    async with get_client() as client:
        document = await client.read_block_document_by_name(
            name, "exona-credentials", include_secrets=False
        )
    hay.add("block document", document.model_dump_json())
    await read_back(hay, [state.state_details.flow_run_id])
    add_logs(hay, caplog)
    assert hay.where("website_unreachable")
    assert hay.where(SENTINEL) == []


async def test_a_provider_echoing_the_key_in_its_error_does_not_leak_it(hay, caplog):
    """Some APIs quote the key they refused; the error built from their message must not."""
    creds = ExonaCredentials(
        api_key=SENTINEL, base_url="https://echo.test/api/v1", policy_scale=SIM_SCALE
    )
    body = {"error": {"code": "unauthorized", "message": f"API key {SENTINEL} is revoked"}}
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post("https://echo.test/api/v1/scans").mock(
            return_value=httpx.Response(401, json=body)
        )
        mock.route().pass_through()  # the Prefect API
        with pytest.raises(AuthenticationError) as info:
            await shared_client(creds).submit(
                {"company_name": "Acme", "company_website": "acme.ai"}
            )
        hay.add_exception("exception", info.value)
        state = await FLOWS["exona"](creds, return_state=True)
        rows = await state.aresult()
    assert route.call_count == 3 and {row.status for row in rows} == {"error"}
    hay.add("returned rows", [row.model_dump_json() for row in rows])
    await read_back(hay, [state.state_details.flow_run_id])
    add_logs(hay, caplog)
    assert hay.where("is revoked")  # the provider's message is kept, the key is not
    assert hay.where(SENTINEL) == []


WEBHOOK_SENTINEL = "whk_SENTINEL_" + "4d2b" * 8  # a capability-token key of 45 characters


@pytest.mark.slow  # 5 s
async def test_callbacks_leave_the_webhook_secret_and_tokens_nowhere(sim, hay, caplog, monkeypatch):
    """The generation flow in callback mode, its callbacks through a receiver in this
    process (events on): neither the secret nor any token is in anything it left."""
    import prefect_pollers.client as client_module
    from prefect_pollers.ops.serving import BackgroundServer, bind_socket
    from prefect_pollers.webhooks.app import create_webhook_app

    accept_sentinel(sim)
    tokens: list[str] = []
    made = client_module.capability_token

    def recording(*args: Any) -> str:
        tokens.append(made(*args))
        return tokens[-1]

    monkeypatch.setattr(client_module, "capability_token", recording)
    with bind_socket("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
    block = ApixoCredentials(
        api_key=SENTINEL,
        base_url=sim.base_url("apixo"),
        policy_scale=SIM_SCALE,
        callback_base_url=f"http://127.0.0.1:{port}",
        webhook_secret=WEBHOOK_SENTINEL,
    )
    hay.add_block("callback block", block)
    receiver = BackgroundServer(create_webhook_app([block]), "127.0.0.1", port)
    receiver.start()
    try:
        state = await FLOWS["apixo"](block, request_type="callback", return_state=True)
        rows = await state.aresult()
    finally:
        receiver.stop()
    hay.add("returned rows", [row.model_dump_json() for row in rows])
    await read_back(hay, [state.state_details.flow_run_id])
    # The simulated provider (a thread of this process) logs the URLs it posts to, as
    # httpx logs every request: that is the provider's log, not ours.
    provider_lines = [r for r in caplog.records if r.threadName.startswith("simulator-")]
    assert any("/hooks/apixo/" in r.getMessage() for r in provider_lines)
    for record in provider_lines:
        caplog.records.remove(record)
    caplog.handler.stream.truncate(0)
    for record in caplog.records:
        caplog.handler.stream.write(caplog.handler.format(record) + "\n")
    add_logs(hay, caplog)
    assert [row.status for row in rows] == ["succeeded", "failed"]
    assert len(tokens) == 2 and sim.stats()["apixo"]["callbacks_sent"] == 2
    assert hay.where("prefect-pollers.job.callback")  # the receiver's events were searched
    for needle in (SENTINEL, WEBHOOK_SENTINEL, *tokens, *(t.split(".")[1] for t in tokens)):
        assert hay.where(needle) == [], needle


def basic_auth_block(sim, password: str) -> JobApiCredentials:
    """The generic API's block with HTTP Basic auth (the simulator's key as password)."""
    return simulator_generic_api(
        sim.base_url("generic"), "", username="ops", password=password, policy_scale=SIM_SCALE
    )


async def test_the_generic_flow_with_basic_auth_leaves_the_password_nowhere(sim, hay, caplog):
    accept_sentinel(sim)
    good, wrong = basic_auth_block(sim, SENTINEL), basic_auth_block(sim, WRONG_KEY)
    hay.add_block("block", good)
    hay.add_block("wrong block", wrong)
    hay.add("contract", repr(good.contract()))
    runs = []
    for creds in (good, wrong):
        state = await FLOWS["generic"](creds, return_state=True)
        rows = await state.aresult()
        runs.append((state.state_details.flow_run_id, rows))
        hay.add("returned rows", [row.model_dump_json() for row in rows])
    await read_back(hay, [run_id for run_id, _ in runs])
    add_logs(hay, caplog)
    assert [row.status for row in runs[0][1]] == ["succeeded", "failed"]
    assert all("http=401" in (row.error or "") for row in runs[1][1])
    assert hay.where("poll 1 ->") and hay.where("http=401")
    assert hay.where(SENTINEL) == []


@pytest.mark.slow  # 5-7 s
async def test_a_saved_basic_auth_block_and_its_document_leave_the_password_nowhere(sim, hay):
    accept_sentinel(sim)
    name = f"secrets-basic-{uuid.uuid4().hex[:8]}"
    await basic_auth_block(sim, SENTINEL).save(name)
    loaded = await HttpJobApi.aload(name)
    assert loaded.password is not None
    assert loaded.password.get_secret_value() == SENTINEL  # saved and loaded intact
    hay.add_block("loaded block", loaded)
    state = await FLOWS["generic"](name, return_state=True)
    assert [row.status for row in await state.aresult()] == ["succeeded", "failed"]
    async with get_client() as client:
        document = await client.read_block_document_by_name(
            name, "http-job-api", include_secrets=False
        )
    hay.add("block document", document.model_dump_json())
    await read_back(hay, [state.state_details.flow_run_id])
    assert hay.where("ops")  # the user name is not a secret
    assert hay.where(SENTINEL) == []


async def test_a_provider_echoing_the_password_in_its_error_does_not_leak_it(hay):
    creds = HttpJobApi(
        base_url="https://echo.test/v1", username="ops", password=SENTINEL, policy_scale=SIM_SCALE
    )
    body = {"error": {"code": "unauthorized", "message": f"password {SENTINEL} is wrong"}}
    with respx.mock(assert_all_called=False) as mock:
        mock.post("https://echo.test/v1/jobs").mock(return_value=httpx.Response(401, json=body))
        with pytest.raises(AuthenticationError) as info:
            await shared_client(creds).submit({"n": 1})
    hay.add_exception("exception", info.value)
    assert hay.where("is wrong")
    assert hay.where(SENTINEL) == []
