"""A catalog preset in a flow: ``run_job`` on the fal preset against its fake, virtual time.

The Prefect test server stays reachable: respx passes loopback requests through.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import respx
from prefect import flow

from prefect_pollers import HttpJobApi, JobCancelledError, run_job
from prefect_pollers.providers.catalog import preset
from prefect_pollers.testing import VirtualClock, use_clock
from tests.vendor_fakes import FalFake

pytestmark = pytest.mark.usefixtures("prefect_harness")

KEY = "SENTINEL-catalog-flow-key"


@flow
async def generate(api: HttpJobApi, prompt: str) -> Any:
    return await run_job(api, {"prompt": prompt}, idempotency_key=f"fal-{uuid.uuid4()}")


@pytest.mark.parametrize("outcome", ["succeeded", "cancelled"])
async def test_run_job_on_the_fal_preset_ends_as_the_request_did(outcome):
    api = preset("fal", app="fal-ai/flux/dev", api_key=KEY)
    with respx.mock(assert_all_called=False) as router, use_clock(VirtualClock()):
        router.route(host="127.0.0.1").pass_through()
        router.route(host="localhost").pass_through()
        fake = FalFake(KEY).mount(router)
        fake.outcome = outcome
        state = await generate(api, "a cat", return_state=True)
    (job,) = fake.jobs.values()
    assert job.polls == 3 and fake.calls["submits"] == 1
    if outcome == "succeeded":
        result = await state.aresult()
        assert result.output["seed"] == 42
    else:
        assert state.is_failed()
        assert isinstance(await state.aresult(raise_on_failure=False), JobCancelledError)
