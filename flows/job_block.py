"""A saved job, run through Prefect's job interface (``JobBlock`` / ``JobRun``).

Save a :class:`~prefect_pollers.PollerJob` once (any provider's credentials, a
request, optionally a poll policy)::

    PollerJob(credentials=ExonaCredentials.load("exona"),
              request={"company_name": "Acme AI Ltd",
                       "company_website": "https://acme.ai"}).save("acme-scan")

then run it by name, here or from any code written against ``prefect.blocks.abstract``.
Leave ``idempotency_key`` empty: each flow run submits the job once, and a retried
run re-attaches to it.
"""

from __future__ import annotations

from prefect import flow

from prefect_pollers import JobResult, PollerJob


@flow(name="job-block", description="Trigger a saved PollerJob and wait for its result.")
async def job_block(job: PollerJob | str = "acme-scan") -> JobResult:
    """Trigger ``job``, wait for it to end and return the provider's typed result.

    Args:
        job: A ``PollerJob`` block, or the name of a saved one.

    Raises:
        PollerError: the typed error of a job that did not succeed.
    """
    block = job if isinstance(job, PollerJob) else await PollerJob.aload(job)
    run = await block.trigger()
    await run.wait_for_completion()
    return await run.fetch_result()
