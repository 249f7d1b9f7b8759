"""Classify support tickets with a provider batch: OpenAI Batch or Anthropic Message Batches.

Copy this flow and adapt it. Every ticket becomes one request of a provider batch
(half the price of the same requests sent one by one, answered within 24 h); the
batches are created once through the ledger, waited on like any job, and their
results streamed into one row per ticket, with the failed requests named. A retried
or re-run flow run creates no batch twice.

Run it on the simulator: ``make demo PROVIDER=openai-batch`` (or ``anthropic-batch``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel

from prefect_pollers import (
    AnthropicBatchCredentials,
    BatchItem,
    DurableWait,
    OpenAIBatchCredentials,
    Outcome,
    cancel_remote_jobs,
    run_provider_batch,
)
from prefect_pollers.events.tables import publish_table
from prefect_pollers.ledger.idempotency import default_scope
from prefect_pollers.providers import (
    AnthropicBatchResult,
    OpenAIBatchResult,
    ProviderBatchCredentials,
    RequestResult,
    load_credentials,
)

INSTRUCTIONS = (
    "Classify this support ticket as one of billing, account, bug, question. "
    "Answer with the category alone."
)


class TicketRow(BaseModel):
    """One ticket's line in the triage table."""

    ticket: str
    subject: str
    status: Outcome
    answer: str | None = None
    batch_id: str | None = None
    error: str | None = None


def read_tickets(path: str | Path) -> list[dict[str, str]]:
    """The tickets of a CSV file with ``ticket_id``, ``subject`` and ``body`` columns."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def ticket_request(credentials: ProviderBatchCredentials, ticket: dict[str, str]) -> dict[str, Any]:
    """The request that classifies ``ticket``, in the API's own shape."""
    text = f"{INSTRUCTIONS}\n\nSubject: {ticket['subject']}\n\n{ticket['body']}"
    messages = [{"role": "user", "content": text}]
    if isinstance(credentials, AnthropicBatchCredentials):
        return {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": messages}
    return {"model": "gpt-4o-mini", "max_tokens": 16, "messages": messages}


def answer_of(result: RequestResult | None) -> str | None:
    """The model's text answer in a request's result."""
    if isinstance(result, OpenAIBatchResult):
        choices = result.body.get("choices") or [{}]
        return str((choices[0].get("message") or {}).get("content") or "")
    if isinstance(result, AnthropicBatchResult):
        blocks = result.message.get("content") or []
        return " ".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    return None


@flow(
    name="ticket-triage",
    description="Classify support tickets in provider batches (OpenAI or Anthropic).",
    on_cancellation=[cancel_remote_jobs],
)
async def ticket_triage(
    csv_path: str = str(Path(__file__).parent / "data" / "tickets.csv"),
    credentials: OpenAIBatchCredentials | AnthropicBatchCredentials | str = "openai-batch",
    artifact_key: str = "ticket-triage",
    durable: DurableWait | None = None,
) -> list[TicketRow]:
    """Classify every ticket of ``csv_path``; one row per ticket.

    Args:
        csv_path: The tickets (``ticket_id``, ``subject``, ``body``).
        credentials: A provider-batch block, or the name of a saved OpenAI one.
        artifact_key: Key of the result table artifact.
        durable: Hand the batches to the poller service and suspend the flow run
            while they run (a deployment's run and a saved block; see "Durable waits").
    """
    creds: ProviderBatchCredentials = (
        await load_credentials(OpenAIBatchCredentials, credentials)
        if isinstance(credentials, str)
        else credentials
    )
    scope = default_scope()  # a re-run of this flow run finds its batches
    tickets = read_tickets(csv_path)
    items = [
        BatchItem(
            label=ticket["ticket_id"],
            key=f"{scope}-{ticket['ticket_id']}",
            request=ticket_request(creds, ticket),
            source=f"{Path(csv_path).name}, line {line}",
        )
        for line, ticket in enumerate(tickets, start=2)
    ]
    outcomes = await run_provider_batch(creds, items, title="ticket triage", durable=durable)
    subjects = {ticket["ticket_id"]: ticket["subject"] for ticket in tickets}
    rows = sorted(
        (
            TicketRow(
                ticket=outcome.label,
                subject=subjects.get(outcome.label, ""),
                status=outcome.outcome,
                answer=answer_of(outcome.result),
                batch_id=outcome.job_id,
                error=outcome.error,
            )
            for outcome in outcomes.read()
        ),
        key=lambda row: row.ticket,
    )
    await publish_table(artifact_key, "Ticket triage", rows)
    return rows
