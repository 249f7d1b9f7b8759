"""Exona tasks and the batch-scans flow against the real simulator, under Prefect."""

import uuid
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

import prefect_pollers.events.jobs as events_module
from flows.batch_scans import batch_scans
from prefect_pollers import (
    AuthenticationError,
    BadRequestError,
    ExonaCredentials,
    JobFailedError,
    run_job,
    submit_job,
    wait_for_job,
)
from prefect_pollers.providers import ExonaScanRequest, ExonaScanResult, exona_policy
from prefect_pollers.testing.simulator import FaultRule, SimulatorConfig
from tests.constants import SIM_SCALE

pytestmark = pytest.mark.usefixtures("prefect_harness")

POLICY = exona_policy().scaled(SIM_SCALE)
ACME = {"company_name": "Acme AI Ltd", "company_website": "https://acme.ai"}


def creds(sim, key="sim-key"):
    return ExonaCredentials(api_key=key, base_url=sim.base_url("exona"))


def exona_stats(sim):
    return sim.state.stats()["exona"]


async def test_run_job_returns_typed_result_and_respects_retry_after(sim):
    @flow
    async def one():
        return await run_job(
            creds(sim), ACME, idempotency_key=f"acme-{uuid.uuid4()}", policy=POLICY
        )

    result = await one()
    assert isinstance(result, ExonaScanResult)
    assert result.overall_risk_level in {"low", "medium", "high", "critical"}
    stats = exona_stats(sim)
    assert stats["submits"] == 1 and stats["http_429"] == 0
    assert 1 <= stats["status_calls"] <= 15


@pytest.mark.slow  # 67 s
async def test_same_idempotency_key_never_submits_twice_across_flow_runs(sim):
    key = f"acme-{uuid.uuid4()}"

    @flow
    async def scan():
        return await run_job(creds(sim), ACME, idempotency_key=key, policy=POLICY)

    first, second = await scan(), await scan()
    assert first.scan_id == second.scan_id
    stats = exona_stats(sim)
    assert stats["submits"] == 1 and stats["submits_per_idempotency_key"] == {key: 1}


async def test_retried_flow_run_reattaches_to_the_job_it_submitted(sim):
    attempts = []

    @flow(retries=1, retry_delay_seconds=0)
    async def flaky():
        ref = await submit_job(creds(sim), ACME)  # no key: the flow run scopes it
        attempts.append(ref.job_id)
        if len(attempts) == 1:
            raise RuntimeError("the worker fell over mid-wait")
        return await wait_for_job(creds(sim), ref, policy=POLICY)

    result = await flaky()
    assert attempts[0] == attempts[1] == result.scan_id
    assert exona_stats(sim)["submits"] == 1


async def test_failed_scan_raises_job_failed_with_provider_code(sim):
    @flow
    async def failing():
        return await run_job(
            creds(sim),
            {"company_name": "Ghost", "company_website": "https://ghost.invalid"},
            policy=POLICY,
        )

    with pytest.raises(JobFailedError) as info:
        await failing()
    assert info.value.error_code == "website_unreachable"


async def test_wrong_key_fails_after_exactly_one_request(sim):
    @flow
    async def unauthorized():
        return await run_job(creds(sim, key="wrong-SENTINEL-key"), ACME, policy=POLICY)

    with pytest.raises(AuthenticationError) as info:
        await unauthorized()
    stats = exona_stats(sim)
    assert stats["http_401"] == 1 and stats["submits"] == 0
    assert "wrong-SENTINEL-key" not in str(info.value)


async def test_invalid_request_is_refused_before_sending(sim):
    @flow
    async def bad():
        request = {
            "company_name": "Acme",
            "company_website": "https://acme.ai",
            "max_age_days": True,
        }
        return await submit_job(creds(sim), request)

    with pytest.raises(BadRequestError, match="max_age_days"):
        await bad()
    stats = exona_stats(sim)
    assert stats["submits"] == 0 and stats["http_422"] == 0


async def test_request_the_provider_refuses_fails_at_once_with_its_message(sim):
    request = ExonaScanRequest.model_construct(company_name="", company_website="https://a.ai")

    @flow
    async def bad():
        return await submit_job(creds(sim), request)

    with pytest.raises(BadRequestError, match="company_name") as info:
        await bad()
    assert info.value.http_status == 422 and exona_stats(sim)["http_422"] == 1


async def test_wait_survives_an_outage_via_task_retry_and_reattaches(sim):
    sim.state.config = SimulatorConfig(
        time_scale=SIM_SCALE,
        seed=1,
        faults=[FaultRule(provider="exona", route="status", kind="http_503", first=3)],
    )
    wait_fast_retry = wait_for_job.with_options(retry_delay_seconds=0)

    @flow
    async def outage():
        ref = await submit_job(creds(sim), ACME, idempotency_key=f"o-{uuid.uuid4()}")
        return await wait_fast_retry(creds(sim), ref, policy=POLICY.with_(error_budget=1))

    result = await outage()
    stats = exona_stats(sim)
    assert result.overall_risk_level and stats["submits"] == 1
    assert stats["faults_injected"].get("http_503") == 3


async def test_state_changes_emit_prefect_events(sim, monkeypatch):
    events = []
    monkeypatch.setattr(events_module, "emit_event", lambda **kw: events.append(kw))

    @flow
    async def one():
        return await run_job(creds(sim), ACME, policy=POLICY)

    result = await one()
    assert events, "no event emitted"
    resource_ids = {e["resource"]["prefect.resource.id"] for e in events}
    assert resource_ids == {f"prefect-pollers.job.exona.{result.scan_id}"}
    assert events[0]["event"] == "prefect-pollers.job.submitted"
    assert events[0]["payload"]["block_type_slug"] == "exona-credentials"
    assert events[-1]["event"] == "prefect-pollers.job.succeeded"
    assert events[-1]["payload"]["new_state"] == "succeeded"
    assert events[1]["payload"]["old_state"] is None


@pytest.mark.slow  # 7 s
def test_tasks_work_from_a_sync_flow(sim):
    @flow
    def sync_flow():
        ref = submit_job.submit(creds(sim), ACME, f"sync-{uuid.uuid4()}").result()
        return wait_for_job.submit(creds(sim), ref, POLICY).result()

    result = sync_flow()
    assert result.overall_risk_level and exona_stats(sim)["submits"] == 1


@pytest.mark.slow  # 5 s
async def test_task_runs_are_named_by_provider_and_job_id(sim):
    key = f"named-{uuid.uuid4()}"

    @flow
    async def one():
        return await run_job(creds(sim), ACME, idempotency_key=key, policy=POLICY)

    result = await one()
    async with get_client() as client:
        runs = await client.read_task_runs()
    names = {run.name for run in runs}
    assert f"wait-exona-{result.scan_id}" in names and f"submit-exona-{key}" in names


@pytest.mark.slow  # 9 s
async def test_batch_scans_flow_over_the_sample_csv(sim):
    csv_path = Path(__file__).parents[1] / "flows" / "data" / "companies.csv"
    key = f"batch-{uuid.uuid4().hex[:8]}"
    rows = await batch_scans(
        csv_path=str(csv_path),
        credentials=creds(sim),
        concurrency=5,
        policy=exona_policy(20).scaled(SIM_SCALE),
        artifact_key=key,
    )
    assert len(rows) == 20
    failed = [r for r in rows if r.status != "succeeded"]
    assert [r.company for r in failed] == ["Ghost Holdings"]
    assert "website_unreachable" in failed[0].error
    assert all(r.risk_level for r in rows if r.status == "succeeded")
    stats = exona_stats(sim)
    assert stats["submits"] == 20 and stats["duplicate_submits"] == 0
    assert stats["max_jobs_in_flight"] <= 5 and stats["http_429"] == 0
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert len(artifacts) == 1 and artifacts[0].type == "table"
    assert "Ghost Holdings" in str(artifacts[0].data) and "sim-key" not in str(artifacts[0].data)


@pytest.mark.slow  # 15 s
async def test_batched_mode_runs_the_batch_in_one_task_run_and_reattaches(sim):
    companies = [
        {"company_name": f"Co {i}", "company_website": f"https://co{i}.test"} for i in range(30)
    ] + [{"company_name": "Ghost", "company_website": "https://ghost.invalid"}]
    kwargs = {
        "companies": companies,
        "credentials": creds(sim),
        "concurrency": 10,
        "policy": exona_policy(31).scaled(SIM_SCALE),
        "task_runs": "batched",
        "idempotency_prefix": f"b-{uuid.uuid4().hex[:6]}",
        "max_age_days": None,
    }
    rows = await batch_scans(**kwargs)
    again = await batch_scans(**kwargs)  # same keys: re-attaches, submits nothing
    assert [r.status for r in rows].count("succeeded") == 30
    assert rows[-1].status == "failed" and "website_unreachable" in rows[-1].error
    assert [r.scan_id for r in rows] == [r.scan_id for r in again]
    stats = exona_stats(sim)
    assert stats["submits"] == 31 and stats["duplicate_submits"] == 0
    assert stats["max_jobs_in_flight"] <= 10


@pytest.mark.slow  # 9 s
async def test_batch_scans_keeps_going_with_a_list_and_cache_hits(sim):
    companies = [ACME, {"company_name": "Zenith ML", "company_website": "https://zenith.ml"}]
    first = await batch_scans(
        companies=companies, credentials=creds(sim), policy=exona_policy(2).scaled(SIM_SCALE)
    )
    second = await batch_scans(
        companies=companies, credentials=creds(sim), policy=exona_policy(2).scaled(SIM_SCALE)
    )
    assert [r.status for r in first] == ["succeeded", "succeeded"]
    assert [r.cached for r in second] == [True, True]  # max_age_days=30 reuses the scans
    assert exona_stats(sim)["submits"] == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"companies": []}, "empty"),
        ({"companies": [ACME], "concurrency": 0}, "concurrency"),
        ({"companies": [{"company_name": "No Site"}]}, "company_website"),
        ({"companies": [ACME], "csv_path": "x.csv"}, "exactly one"),
    ],
)
async def test_batch_scans_refuses_bad_input_before_submitting(sim, kwargs, message):
    with pytest.raises(Exception, match=message):
        await batch_scans(credentials=creds(sim), **kwargs)
    assert exona_stats(sim)["submits"] == 0


async def test_batch_scans_refuses_csv_missing_a_column(sim, tmp_path):
    bad = tmp_path / "companies.csv"
    bad.write_text("company_name,website\nAcme,https://acme.ai\n")
    with pytest.raises(ValueError, match="missing column"):
        await batch_scans(csv_path=str(bad), credentials=creds(sim))
    assert exona_stats(sim)["submits"] == 0


async def test_progress_artifact_ends_at_100_percent_however_jobs_interleave(sim):
    companies = [
        {"company_name": f"P {i}", "company_website": f"https://p{i}.test"} for i in range(12)
    ]
    state = await batch_scans(
        companies=companies,
        credentials=creds(sim),
        concurrency=12,
        policy=exona_policy(12).scaled(SIM_SCALE),
        max_age_days=None,
        return_state=True,
    )
    run_id = state.state_details.flow_run_id
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    assert [a.data for a in artifacts if a.type == "progress"] == [100.0]


@pytest.mark.slow  # 5-7 s each
@pytest.mark.parametrize("task_runs", ["per-job", "batched"])
async def test_a_job_stuck_in_a_phase_ends_its_wait_and_emits_stuck(sim, monkeypatch, task_runs):
    """Scans that never finish, with a 2-minute deadline on the ``analyzing`` phase."""
    from prefect_pollers import BatchItem, run_batch

    sim.state.config = SimulatorConfig(time_scale=SIM_SCALE, seed=8, never_finish_rate=1.0)
    events = []
    monkeypatch.setattr(events_module, "emit_event", lambda **kw: events.append(kw))
    policy = POLICY.with_(phase_deadlines={"analyzing": 120 * SIM_SCALE})

    @flow
    async def stuck():
        item = BatchItem(label="acme", key=f"stuck-{uuid.uuid4()}", request=ACME)
        return await run_batch(creds(sim), [item], policy=policy, task_runs=task_runs)

    [outcome] = await stuck()
    assert outcome.outcome.value == "timed_out"
    assert "phase 'analyzing'" in (outcome.error or "")
    assert outcome.error_type == "PhaseDeadlineError"
    [event] = [e for e in events if e["event"] == "prefect-pollers.job.stuck"]
    assert event["payload"]["phase"] == "analyzing"
    assert event["payload"]["phase_deadline_s"] == 120 * SIM_SCALE
