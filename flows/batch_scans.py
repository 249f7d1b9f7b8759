"""Scan a portfolio of companies with Exona, a few at a time, and tabulate the risk levels.

Copy this flow and adapt it. It takes the companies as a list or a CSV file (columns
``company_name`` and ``company_website``, optionally ``max_age_days``), scans them
with bounded concurrency, keeps a per-company error instead of failing the batch,
shows a progress artifact while it runs and a table artifact at the end, and returns
one row per company.

Run it: ``python -m flows.batch_scans --csv flows/data/companies.csv --block exona``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel

from prefect_pollers import (
    BatchItem,
    ExonaCredentials,
    Outcome,
    PollPolicy,
    cancel_remote_jobs,
    run_batch,
)
from prefect_pollers.batch.shards import Shard, Sharding, run_shards
from prefect_pollers.events.tables import publish_table
from prefect_pollers.ledger.idempotency import default_scope
from prefect_pollers.providers import exona_policy, load_credentials

REQUIRED_COLUMNS = ("company_name", "company_website")


class ScanRow(BaseModel):
    """One company's line in the batch table."""

    company: str
    website: str
    status: Outcome
    risk_level: str | None = None
    cached: bool | None = None
    scan_id: str | None = None
    error: str | None = None


def read_companies_csv(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Read companies from a CSV file with a header row, with the line each is on.

    Raises:
        ValueError: if the file lacks a required column or a max_age_days is not a number.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; "
                f"the header must name {', '.join(REQUIRED_COLUMNS)}"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            company = {k: v.strip() for k, v in row.items() if k and v and v.strip()}
            if "max_age_days" in company:
                try:
                    company["max_age_days"] = int(company["max_age_days"])
                except ValueError:
                    raise ValueError(
                        f"{path}, line {line}: max_age_days must be a whole number of days, "
                        f"got {company['max_age_days']!r}"
                    ) from None
            rows.append((line, company))
        return rows


@flow(
    name="batch-scans",
    description="Exona risk scans of many companies, a few at a time.",
    on_cancellation=[cancel_remote_jobs],
    persist_result=True,  # a sharded parent reads its shards' rows
)
async def batch_scans(
    companies: list[dict[str, Any]] | None = None,
    csv_path: str | None = None,
    credentials: ExonaCredentials | str = "exona",
    concurrency: int = 5,
    max_age_days: int | None = 30,
    policy: PollPolicy | None = None,
    idempotency_prefix: str | None = None,
    artifact_key: str = "exona-batch-scans",
    task_runs: Literal["auto", "per-job", "batched"] = "auto",
    sharding: Sharding | None = None,
    shard: Shard | None = None,
) -> list[ScanRow]:
    """Scan every company and return one row each.

    Args:
        companies: Dicts with ``company_name``, ``company_website`` (and any other
            Exona scan field). Give this or ``csv_path``.
        csv_path: A CSV file of companies instead.
        credentials: An ``ExonaCredentials`` block, or the name of a saved one.
        concurrency: Scans in flight at once (the Exona guide uses 5).
        max_age_days: Reuse Exona's cached scans up to this age (None: always scan).
        policy: The poll policy; by default the Exona guide's schedule for the
            batch's size (15 s, or 30 s from 100 companies, Retry-After honoured).
            Scaled by the block's ``policy_scale``.
        idempotency_prefix: Prefix of every scan's idempotency key. By default the
            flow run id: a retry of this flow run re-attaches to its scans instead of
            scanning again. Give a fixed prefix to make re-runs re-attach too.
        artifact_key: Key of the result table artifact.
        task_runs: ``per-job`` (a submit and a wait task run per company),
            ``batched`` (one task run for the whole batch: for thousands of companies)
            or ``auto`` (per-job up to 100 companies, batched beyond).
        sharding: Split a CSV of more than ``sharding.threshold`` companies over
            ``sharding.shards`` flow runs of ``sharding.deployment`` (this flow's
            shard deployment) on its work pool; this run waits for them and
            publishes the one table. ``credentials`` must then be a block name.
        shard: Set by a sharded parent: scan only this range of the CSV's rows, and
            return them as dicts (the parent's table has them).
    """
    if (companies is None) == (csv_path is None):
        raise ValueError("give exactly one of `companies` and `csv_path`")
    if csv_path is not None:
        rows = [
            (f"{csv_path}, line {line}", company) for line, company in read_companies_csv(csv_path)
        ]
    else:
        rows = [(None, company) for company in companies or []]
    prefix = idempotency_prefix or default_scope()
    if shard is not None:
        rows = shard.take(rows)
    elif sharding is not None and sharding.applies_to(len(rows)):
        if csv_path is None or not isinstance(credentials, str):
            raise ValueError("a sharded batch takes `csv_path` and a block name as `credentials`")
        table = await scan_in_shards(
            sharding,
            rows,
            parameters={
                "csv_path": csv_path,
                "credentials": credentials,
                "concurrency": concurrency,
                "max_age_days": max_age_days,
                "policy": policy.model_dump(mode="json") if policy else None,
                "idempotency_prefix": prefix,
                "task_runs": "batched",
            },
        )
        await publish_table(artifact_key, "Exona scans", table)
        return table
    creds = await load_credentials(ExonaCredentials, credentials)
    items = []
    for source, company in rows:
        request = dict(company)
        if max_age_days is not None:
            request.setdefault("max_age_days", max_age_days)
        label = str(company.get("company_name") or "?")
        website = str(company.get("company_website") or label)
        items.append(
            BatchItem(
                label=label, key=f"{prefix}:{website.lower()}", request=request, source=source
            )
        )
    outcomes = await run_batch(
        creds,
        items,
        concurrency=concurrency,
        policy=policy or exona_policy(len(items)),
        title="Exona scans",
        task_runs=task_runs,
    )
    table = [
        ScanRow(
            company=item.label,
            website=str(item.request.get("company_website", "")),
            status=outcome.outcome,
            risk_level=outcome.result.overall_risk_level if outcome.result else None,
            cached=outcome.result.cached if outcome.result else None,
            scan_id=outcome.job_id,
            error=outcome.error,
        )
        for item, outcome in zip(items, outcomes, strict=True)
    ]
    if shard is not None:
        # Its parent's table holds these rows. As plain data: the parent may have loaded
        # this module under another name (a worker loads it as `batch_scans`), so a
        # pickled ScanRow would not load there.
        return [row.model_dump(mode="json") for row in table]  # type: ignore[return-value]
    await publish_table(artifact_key, "Exona scans", table)
    return table


async def scan_in_shards(
    sharding: Sharding, rows: list[tuple[str | None, dict[str, Any]]], parameters: dict[str, Any]
) -> list[ScanRow]:
    """The rows of every shard's run, in order; a failed shard's companies as errors."""
    table: list[ScanRow] = []
    for outcome in await run_shards(sharding, len(rows), parameters, title="Exona scans"):
        if outcome.error is None:
            table.extend(ScanRow.model_validate(row) for row in outcome.result)
            continue
        for _, company in outcome.shard.take(rows):
            table.append(
                ScanRow(
                    company=str(company.get("company_name") or "?"),
                    website=str(company.get("company_website", "")),
                    status=Outcome.ERROR,
                    error=f"{outcome.error} (flow run {outcome.flow_run_id})",
                )
            )
    return table


def main() -> None:
    """Run the flow from the command line against a saved credentials block."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(Path(__file__).parent / "data" / "companies.csv"))
    parser.add_argument("--block", default="exona", help="name of a saved ExonaCredentials block")
    parser.add_argument("--concurrency", type=int, default=5)
    args = parser.parse_args()
    rows = asyncio.run(
        batch_scans(csv_path=args.csv, credentials=args.block, concurrency=args.concurrency)
    )
    for row in rows:
        print(row.company, row.status, row.risk_level or row.error, sep="\t")


if __name__ == "__main__":
    main()
