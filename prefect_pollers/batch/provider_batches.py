"""Provider batches: many items as the requests of a few remote jobs, one outcome per item.

``run_provider_batch`` turns items into request lines (``custom_id`` = the item's
key), packs them into provider batches within the API's limits, creates each batch
once through the ledger, waits for it like any job, and streams its results files
into one outcome per item, written to a file as they come
(:mod:`~prefect_pollers.batch.outcome_files`).

Created once, whatever happens:

- every item is claimed by one pack in the ledger before anything is sent
  (:mod:`~prefect_pollers.ledger.packs`), and each pack's create goes through the
  ledger's reserve-then-submit under the pack's key: a retried task, a re-run flow, a
  crashed worker's re-run and a live copy find the same batches; a changed item set
  packs only the items no batch holds;
- an input file is uploaded once per pack and recorded before the create: a re-run
  after a crash between the two reuses it; a create that surely did not happen
  deletes it;
- a create whose answer was lost is looked up by its key where the API keeps
  metadata (OpenAI); elsewhere its items end in an error naming the key.

One outcome per item, always: each results line is its request's outcome (a line
that is not JSON is its item's error, found by its ``custom_id``); a request the
results do not mention ends as its batch did (cancelled, expired, failed), or in an
error when the batch succeeded without it; an item refused before sending (invalid
request, a key the API refuses, a line over the size limit, a duplicate key) is
refused alone.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import anyio
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from prefect_pollers.batch.items import first_leaf, secrets_of
from prefect_pollers.batch.models import BatchItem, BatchOutcome, Outcome
from prefect_pollers.batch.outcome_files import OutcomeFiles, OutcomeWriter, outcomes_dir
from prefect_pollers.batch.packing import Sized, pack
from prefect_pollers.batch.provider_batch_progress import ProviderBatchProgress
from prefect_pollers.client import JobApiClient, shared_client
from prefect_pollers.engine import (
    CallbackBinding,
    InvalidRequestError,
    JobEndedError,
    JobRef,
    JobState,
    MalformedResponseError,
    PollerError,
    PollPolicy,
    current_clock,
)
from prefect_pollers.engine.wait import StatusHook
from prefect_pollers.events.jobs import announce_submitted
from prefect_pollers.events.tables import artifact_key, publish_table
from prefect_pollers.ledger import Ledger, LedgerSubmitter, current_ledger
from prefect_pollers.ledger.idempotency import request_digest
from prefect_pollers.ledger.packs import PackLedger
from prefect_pollers.ledger.store import SubmitState
from prefect_pollers.ledger.submitter import endpoint_of
from prefect_pollers.providers.batch_spec import ProviderBatchSpec
from prefect_pollers.providers.callback_urls import NO_FLOW_RUN
from prefect_pollers.providers.contract import fill, fill_url, job_id_at, search
from prefect_pollers.providers.provider_batch import ProviderBatchCredentials, ProviderBatchJob
from prefect_pollers.tasks.observed import observed_wait

if sys.version_info < (3, 11):  # pragma: no cover - the builtin from Python 3.11
    from exceptiongroup import BaseExceptionGroup

READ_ATTEMPTS = 5
"""Reads of one results file before its unread requests end in an error."""
READ_ROUNDS = 3
"""Reads of a batch's results files while they hold fewer lines than its counts promise."""
_UNFINISHED_COUNTS = frozenset({"total", "processing"})
"""Request counts of requests with no results line (the rest each have one)."""
ASSIGN_ROUNDS = 10
"""Rounds of packing and claiming before items still unclaimed are refused."""
_CUSTOM_ID = re.compile(r'"custom_id"\s*:\s*"((?:[^"\\]|\\.)*)"')

_log = logging.getLogger("prefect_pollers.provider_batches")

BatchWait = Callable[[JobRef, StatusHook], Awaitable[ProviderBatchJob | None]]
"""A provider batch's wait: its final status, or None when it was handed over elsewhere."""


@dataclass
class _Line:
    """An item ready to send: its request line (with its newline) and its digest."""

    item: BatchItem
    line: bytes
    digest: str


@dataclass
class _Pack:
    """The items of one provider batch."""

    key: str
    lines: list[_Line]
    ref: JobRef | None = None
    """The batch the ledger recorded for a pack only some of whose items are in this run."""


@dataclass
class _Summary:
    """What one provider batch was, for the returned outcomes and the table."""

    pack_key: str
    requests: int
    batch_id: str | None = None
    state: str | None = None
    created: bool = False
    results_read: bool = False
    read_started_at: float | None = None
    read_s: float | None = None
    counts: dict[str, int] = field(default_factory=dict)


class _Run:
    """One call of :func:`run_provider_batch`."""

    def __init__(
        self,
        credentials: ProviderBatchCredentials,
        *,
        policy: PollPolicy | None,
        ledger: Ledger,
        client: JobApiClient[Any],
        directory: Path,
        title: str,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        wait: BatchWait | None = None,
    ) -> None:
        self.credentials = credentials
        self.wait: BatchWait = wait or self._wait_here
        self.spec: ProviderBatchSpec = credentials.batch_spec()
        self.client = client
        self.policy = policy
        self.ledger = ledger
        self.endpoint = endpoint_of(credentials)
        self.packs = PackLedger(ledger, self.endpoint)
        self.directory = directory
        self.title = title
        self.log = logger
        self.flow_run_id = flow_run.get_id()
        self.secrets = secrets_of(credentials)
        self.files: list[str] = []
        self.counts: Counter[str] = Counter()
        self.summaries: list[_Summary] = []
        self.progress: ProviderBatchProgress | None = None
        self.handed_over = 0

    # -- preparing -----------------------------------------------------------------------
    def prepare(self, items: Sequence[BatchItem], refused: OutcomeWriter) -> list[_Line]:
        """Every item as a request line; those that cannot be sent refused alone."""
        lines: list[_Line] = []
        seen: set[str] = set()
        pattern = re.compile(self.spec.custom_id_pattern) if self.spec.custom_id_pattern else None
        limit = min(self.spec.max_request_bytes or self.spec.max_bytes, self.spec.max_bytes)
        for index, item in enumerate(items):
            where = f"item {index} ({item.label!r}{f', {item.source}' if item.source else ''})"
            try:
                if item.key in seen:
                    raise InvalidRequestError(
                        f"{where}: its key {item.key!r} is another item's: a custom_id must be "
                        "unique within the batch",
                        provider=self.credentials.provider,
                    )
                seen.add(item.key)
                if pattern is not None and not pattern.fullmatch(item.key):
                    raise InvalidRequestError(
                        f"{where}: its key {item.key!r} is not a custom_id the API takes "
                        f"({self.spec.custom_id_pattern})",
                        provider=self.credentials.provider,
                    )
                request = self.credentials.parse_request(item.request, where=where)
                body = request.model_dump(mode="json", exclude_none=True)
                line = self.spec.line_of(item.key, body, self.credentials.batch_endpoint)
                encoded = (json.dumps(line, separators=(",", ":")) + "\n").encode()
                if len(encoded) > limit:
                    raise InvalidRequestError(
                        f"{where}: its request line takes {len(encoded)} bytes, over the API's "
                        f"limit of {limit}",
                        provider=self.credentials.provider,
                    )
            except Exception as exc:  # a refusal belongs to its item
                refused.write(BatchOutcome.of_exception(item, exc, secrets=self.secrets))
                continue
            lines.append(_Line(item, encoded, request_digest(body)))
        return lines

    async def assign(self, lines: list[_Line], refused: OutcomeWriter) -> list[_Pack]:
        """The packs of ``lines``: those the ledger holds, then new ones, each claimed."""
        packs: list[_Pack] = []
        remaining = lines
        for _ in range(ASSIGN_ROUNDS):
            claims = await self.packs.claims([line.item.key for line in remaining])
            held: dict[str, list[_Line]] = {}
            fresh: list[_Line] = []
            for line in remaining:
                claim = claims.get(line.item.key)
                if claim is None:
                    fresh.append(line)
                elif claim.item_digest != line.digest:
                    refused.write(self._reused(line.item, claim.pack_key))
                else:
                    held.setdefault(claim.pack_key, []).append(line)
            for pack_key, members in held.items():
                found = await self._held_pack(pack_key, members, refused)
                if found is not None:
                    packs.append(found)
                else:
                    fresh.extend(members)  # given back: packed again below
            remaining = []
            sized = [Sized(line.item.key, len(line.line)) for line in fresh]
            by_key = {line.item.key: line for line in fresh}
            for planned in pack(
                sized, max_requests=self.spec.max_requests, max_bytes=self.spec.max_bytes
            ):
                members = [by_key[key] for key in planned.keys]
                key = f"pack-{planned.digest()}"
                if await self.packs.claim(key, [(m.item.key, m.digest) for m in members]):
                    packs.append(_Pack(key, members))
                else:
                    remaining.extend(members)  # another pack took one: look again
            if not remaining:
                return packs
        for line in remaining:
            refused.write(
                BatchOutcome.of_exception(
                    line.item,
                    PollerError(
                        "other runs kept claiming this item's requests while it was packed: "
                        "run the batch again",
                        provider=self.credentials.provider,
                    ),
                )
            )
        return packs

    async def _held_pack(
        self, pack_key: str, members: list[_Line], refused: OutcomeWriter
    ) -> _Pack | None:
        """A pack the ledger holds these items in; None when it was given back to pack again."""
        every = await self.packs.members(pack_key)
        if len(every) == len(members):
            return _Pack(pack_key, members)
        row = (await self.ledger.rows(self.endpoint, [pack_key])).get(pack_key)
        if row is not None and row.state == SubmitState.SUBMITTED and row.ref is not None:
            return _Pack(pack_key, members, ref=row.ref)  # re-attach; read these only
        if row is None:
            await self.packs.release(pack_key)  # never sent: its items are free again
            return None
        for line in members:
            refused.write(
                BatchOutcome.of_exception(
                    line.item,
                    PollerError(
                        f"its provider batch {pack_key!r} was being created by a run that did "
                        f"not finish, with {len(every) - len(members)} items this run lacks: "
                        "run the batch with the same items, or see `prefect-pollers ledger "
                        f"show {pack_key}`",
                        provider=self.credentials.provider,
                        idempotency_key=pack_key,
                    ),
                )
            )
        return _Pack(pack_key, [])

    def _reused(self, item: BatchItem, pack_key: str) -> BatchOutcome[Any]:
        return BatchOutcome.of_exception(
            item,
            InvalidRequestError(
                f"its key {item.key!r} was sent in provider batch {pack_key!r} with another "
                "request: give the changed request a new key",
                provider=self.credentials.provider,
                idempotency_key=item.key,
            ),
        )

    # -- one provider batch --------------------------------------------------------------
    async def run_pack(self, submitter: LedgerSubmitter, one: _Pack) -> None:
        """Create (or find) the pack's batch, wait for it, read its results."""
        if not one.lines:
            return
        summary = _Summary(one.key, len(one.lines))
        self.summaries.append(summary)
        try:
            ref, summary.created = await self._create(submitter, one)
        except Exception as exc:  # every item of the pack gets the failure
            self._write_all(one, summary, exc)
            return
        summary.batch_id = ref.job_id
        if summary.created:
            announce_submitted(self.credentials, ref, log_level=logging.INFO)
        self.log.info(
            "provider batch %s (%d requests): %s",
            ref.job_id,
            len(one.lines),
            "created" if summary.created else "found in the ledger",
        )
        ended: JobEndedError | None = None
        try:
            job = await self.wait(ref, lambda status: self._on_status(ref, status.payload))
            if job is None:  # handed over: its results are read after the wait
                summary.state = "handed over"
                self.handed_over += 1
                return
            payload: dict[str, Any] = job.payload
            summary.state = JobState.SUCCEEDED.value
        except JobEndedError as exc:
            ended, payload, summary.state = exc, exc.status.payload, exc.status.state.value
        except Exception as exc:  # a wait that gave up: the batch may still run
            self._write_all(one, summary, exc)
            return
        await self._on_status(ref, payload)
        await self._read_results(one, summary, ref, payload, ended)

    async def _wait_here(self, ref: JobRef, on_status: StatusHook) -> ProviderBatchJob:
        job: ProviderBatchJob = await observed_wait(
            self.credentials,
            ref,
            self.policy,
            logger=self.log,
            client=self.client,
            on_status=on_status,
        )
        return job

    async def _create(self, submitter: LedgerSubmitter, one: _Pack) -> tuple[JobRef, bool]:
        if one.ref is not None:
            return one.ref, False
        digest = {"items": sorted([line.item.key, line.digest] for line in one.lines)}

        async def send() -> JobRef:
            return await self._send(one)

        lookup = self._lookup(one.key) if self.spec.find is not None else None
        return await submitter.submit(one.key, digest, send, lookup=lookup)

    async def _send(self, one: _Pack) -> JobRef:
        file_id = None
        if self.spec.upload is not None:
            file_id = await self.packs.upload_of(one.key)
            if file_id is None:
                file_id = await self._upload(one)
                await self.packs.record_upload(one.key, file_id)
        requests = None if file_id else [json.loads(line.line) for line in one.lines]
        body = self.spec.create_body_of(
            endpoint=self.credentials.batch_endpoint,
            key=one.key,
            input_file_id=file_id,
            requests=requests,
        )
        contract = self.client.contract
        try:
            reply = await self.client.retrying(
                lambda: self.client.request(
                    contract.submit.method,
                    contract.submit.path,
                    json=body,
                    creates=True,
                    idempotency_key=one.key,
                ),
                resend=False,
                what="batch create",
            )
        except PollerError as exc:
            if not exc.may_have_created and file_id is not None:
                await self._delete_upload(one.key, file_id)
            raise
        job_id = self._id_in(reply.body, contract.job_id_field, "create", one.key, created=True)
        if file_id is not None:
            await self.packs.forget_upload(one.key)
        return self._ref(job_id, one.key)

    def _ref(self, job_id: str, key: str) -> JobRef:
        spec = self.credentials.callback_spec()
        return JobRef(
            provider=self.credentials.provider,
            job_id=job_id,
            submitted_at=datetime.fromtimestamp(current_clock().time(), timezone.utc),
            idempotency_key=key,
            # The API calls one URL per account (OpenAI's project webhooks): the
            # callback names the batch, and wakes its wait wherever it runs.
            callback=CallbackBinding(flow_run=NO_FLOW_RUN)
            if spec is not None and spec.url_in == "none"
            else None,
        )

    async def _upload(self, one: _Pack) -> str:
        upload = self.spec.upload
        assert upload is not None
        content = b"".join(line.line for line in one.lines)
        reply = await self.client.retrying(
            lambda: self.client.request(
                "POST",
                upload.path,
                files={upload.file_field: (f"{one.key}.jsonl", content, "application/jsonl")},
                data=upload.fields,
                idempotency_key=one.key,
            ),
            resend=True,  # a second upload costs storage, never a paid request
            what="input upload",
        )
        return self._id_in(reply.body, upload.file_id_field, "upload", one.key, created=False)

    def _id_in(self, body: Any, field: str, what: str, key: str, *, created: bool) -> str:
        """The id ``field`` selects in the answer to a create or an upload.

        Raises:
            MalformedResponseError: when there is none (``created``: the thing may exist).
        """
        found = job_id_at(field, body)
        if found is None:
            raise MalformedResponseError(
                f"{self.credentials.provider} {what} response has no id at {field!r}",
                provider=self.credentials.provider,
                idempotency_key=key,
                may_have_created=created,
            )
        return found

    async def _delete_upload(self, pack_key: str, file_id: str) -> None:
        """Delete an input file whose batch surely was not created (best effort)."""
        upload = self.spec.upload
        if upload is None or upload.delete_path is None:
            return
        try:
            await self.client.request("DELETE", fill(upload.delete_path, {"file_id": file_id}))
            await self.packs.forget_upload(pack_key)
        except Exception as exc:  # kept in the ledger: the next attempt reuses it
            self.log.warning("input file %s could not be deleted: %s", file_id, exc)

    def _lookup(self, key: str) -> Any:
        find = self.spec.find
        assert find is not None

        async def lookup() -> JobRef | None:
            cursor = None
            for _ in range(find.max_pages):
                path = find.path
                if cursor is not None:
                    joiner = "&" if "?" in path else "?"
                    path = f"{path}{joiner}{find.cursor_param}={cursor}"
                reply = await self.client.request("GET", path, polling=True)
                for batch in search(find.items, reply.body) or []:
                    if search(find.key, batch) == key:
                        job_id = job_id_at(self.client.contract.job_id_field, batch)
                        if job_id is not None:
                            self.log.info("provider batch %s found by its key %s", job_id, key)
                            return self._ref(job_id, key)
                cursor = search(find.cursor, reply.body)
                if not cursor:
                    return None
            raise PollerError(
                f"no provider batch with key {key!r} in the newest {find.max_pages} pages, "
                "and older pages were not read: it may exist",
                provider=self.credentials.provider,
                idempotency_key=key,
            )

        return lookup

    # -- results -------------------------------------------------------------------------
    async def _read_results(
        self,
        one: _Pack,
        summary: _Summary,
        ref: JobRef,
        payload: dict[str, Any],
        ended: JobEndedError | None,
    ) -> None:
        name = f"{self.credentials.provider}-{ref.job_id}"
        path = self.directory / f"{name}.jsonl"
        if path.exists() and one.ref is None:  # read whole by an earlier attempt
            self._reuse(path, summary)
            return
        expected = {line.item.key: line.item for line in one.lines}
        seen: set[str] = set()
        mentioned: set[str] = set()
        problem: PollerError | None = None
        promised = self._promised_lines(payload)
        summary.read_started_at, started = time.time(), time.monotonic()
        partial = self.directory / f"{name}.partial.jsonl"
        with OutcomeWriter(partial) as writer:
            for attempt in range(1, READ_ROUNDS + 1):
                for template in self.spec.results:
                    url = fill_url(template, payload)
                    if url is None:
                        continue
                    problem = (
                        await self._read_file(url, ref, expected, seen, mentioned, writer)
                        or problem
                    )
                if problem is not None or len(seen) == len(expected):
                    break
                if len(mentioned) >= promised or attempt == READ_ROUNDS:
                    break
                # A file shorter than the counts say (e.g. an empty 200 from a proxy).
                self.log.warning(
                    "the results of provider batch %s hold %d requests of the %d its status "
                    "counts: reading them again",
                    ref.job_id,
                    len(mentioned),
                    promised,
                )
                await current_clock().sleep(2.0**attempt * self.credentials.policy_scale)
            for key, item in expected.items():
                if key not in seen:
                    writer.write(self._unmentioned(item, ref, ended, problem))
        summary.results_read = problem is None
        summary.read_s = round(time.monotonic() - started, 3)
        final = path if problem is None and one.ref is None else partial
        if final != partial:
            partial.replace(final)
        self._count(final, writer.counts, summary)

    async def _read_file(
        self,
        url: str,
        ref: JobRef,
        expected: dict[str, BatchItem],
        seen: set[str],
        mentioned: set[str],
        writer: OutcomeWriter,
    ) -> PollerError | None:
        """Read one results file into outcomes; the error that stopped it, if one did.

        ``seen`` gets the keys of ``expected`` read, ``mentioned`` every ``custom_id``.
        """
        clock = current_clock()
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                async with self.client.stream_lines(url, job_id=ref.job_id) as lines:
                    async for text in lines:
                        self._one_line(text, ref, expected, seen, mentioned, writer)
                return None
            except PollerError as exc:
                if not exc.retryable or attempt == READ_ATTEMPTS:
                    self.log.warning(
                        "results of provider batch %s could not be read: %s", ref.job_id, exc
                    )
                    return exc
                delay = getattr(exc, "retry_after", None) or 2.0**attempt
                await clock.sleep(delay * self.credentials.policy_scale)
        raise AssertionError("unreachable")  # pragma: no cover

    def _one_line(
        self,
        text: str,
        ref: JobRef,
        expected: dict[str, BatchItem],
        seen: set[str],
        mentioned: set[str],
        writer: OutcomeWriter,
    ) -> None:
        if not text.strip():
            return
        try:
            body: Any = json.loads(text)
            custom_id = search(self.spec.line_custom_id, body)
        except ValueError:
            body = None
            found = _CUSTOM_ID.search(text)
            custom_id = found.group(1) if found else None
        if isinstance(custom_id, str):
            mentioned.add(custom_id)
        if not isinstance(custom_id, str) or custom_id not in expected or custom_id in seen:
            return  # another run's item, a line read twice, or no custom_id at all
        seen.add(custom_id)
        writer.write(self._line_outcome(expected[custom_id], ref, body))

    def _promised_lines(self, payload: dict[str, Any]) -> int:
        """How many results lines the final status's request counts promise (0: unknown)."""
        counts = search(self.spec.counts, payload) if self.spec.counts else None
        if not isinstance(counts, dict):
            return 0
        return sum(
            value
            for name, value in counts.items()
            if name not in _UNFINISHED_COUNTS and isinstance(value, int)
        )

    def _line_outcome(self, item: BatchItem, ref: JobRef, body: Any) -> BatchOutcome[Any]:
        provider = self.credentials.provider
        if not isinstance(body, dict):
            return BatchOutcome.of_exception(
                item,
                MalformedResponseError(
                    f"its line in the results of provider batch {ref.job_id} is not a JSON object",
                    provider=provider,
                    job_id=ref.job_id,
                ),
            )
        raw = search(self.spec.line_status, body)
        state, known = self.spec.line_states.classify(raw if isinstance(raw, str) else None)
        if state == JobState.SUCCEEDED and known:
            try:
                result = self.credentials.request_result(
                    ref.job_id, item.key, search(self.spec.line_result, body)
                )
            except ValueError as exc:
                return BatchOutcome.of_exception(
                    item,
                    MalformedResponseError(
                        f"its result in provider batch {ref.job_id} is not what the API "
                        f"documents: {str(exc).splitlines()[0]}",
                        provider=provider,
                        job_id=ref.job_id,
                    ),
                )
            return BatchOutcome.succeeded(item, result)
        code = search(self.spec.line_error_code, body)
        message = search(self.spec.line_error_message, body)
        detail = " ".join(str(part) for part in (f"[{code}]" if code else "", message) if part)
        outcome = {
            JobState.CANCELLED: Outcome.CANCELLED,
            JobState.EXPIRED: Outcome.EXPIRED,
        }.get(state, Outcome.FAILED)
        return BatchOutcome(
            label=item.label,
            key=item.key,
            outcome=outcome,
            job_id=ref.job_id,
            error=f"request {outcome.value} in provider batch {ref.job_id}"
            + (f": {detail}" if detail else f" ({raw})"),
            error_type="RequestError",
        )

    def _unmentioned(
        self,
        item: BatchItem,
        ref: JobRef,
        ended: JobEndedError | None,
        problem: PollerError | None,
    ) -> BatchOutcome[Any]:
        """The outcome of a request no results line mentions."""
        if problem is not None:
            return BatchOutcome.of_exception(item, problem, secrets=self.secrets)
        if ended is not None:
            outcome = BatchOutcome[Any].failed(item, ended)
            return outcome.model_copy(
                update={"error": f"its provider batch ended before it ran: {outcome.error}"}
            )
        return BatchOutcome.of_exception(
            item,
            MalformedResponseError(
                f"provider batch {ref.job_id} ended without a result for this request",
                provider=self.credentials.provider,
                job_id=ref.job_id,
            ),
        )

    # -- bookkeeping ---------------------------------------------------------------------
    def _write_all(self, one: _Pack, summary: _Summary, error: Exception) -> None:
        name = f"{self.credentials.provider}-{one.key}.partial.jsonl"
        with OutcomeWriter(self.directory / name) as writer:
            for line in one.lines:
                writer.write(BatchOutcome.of_exception(line.item, error, secrets=self.secrets))
        self._count(self.directory / name, writer.counts, summary)

    def _reuse(self, path: Path, summary: _Summary) -> None:
        counts: Counter[str] = Counter()
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                counts[json.loads(line)["outcome"]] += 1
        summary.results_read = True
        self._count(path, counts, summary)

    def refused(self, path: Path, counts: Counter[str]) -> None:
        """Count the items refused before anything was sent."""
        self._count(path, counts, _Summary("(refused)", sum(counts.values())))

    def _count(self, path: Path, counts: Counter[str], summary: _Summary) -> None:
        self.files.append(str(path))
        self.counts.update(counts)
        summary.counts = dict(counts)

    async def _on_status(self, ref: JobRef, payload: dict[str, Any]) -> None:
        if self.progress is not None and self.spec.counts is not None:
            counts = search(self.spec.counts, payload)
            if isinstance(counts, dict):
                await self.progress.update(ref.job_id, counts)


class DurableProviderBatch(Protocol):
    """A way for provider batches' waits to leave their process: ``durable=``'s hook.

    :class:`~prefect_pollers.durable.DurableWait` is one; ``batch`` never imports
    ``durable``, which builds on it.
    """

    async def run_provider_batch(
        self,
        credentials: ProviderBatchCredentials,
        items: Sequence[BatchItem],
        *,
        policy: PollPolicy | None,
        title: str,
        ledger: Ledger | None,
    ) -> OutcomeFiles:
        """Run ``items`` as provider batches; one outcome per item."""


async def run_provider_batch(
    credentials: ProviderBatchCredentials,
    items: Sequence[BatchItem],
    *,
    policy: PollPolicy | None = None,
    title: str | None = None,
    ledger: Ledger | None = None,
    durable: DurableProviderBatch | None = None,
) -> OutcomeFiles:
    """Run ``items`` as the requests of provider batches: one outcome per item.

    One task run (``provider-batch``) creates the batches, waits for them and reads
    their results; retrying it, or re-running the flow, creates no batch twice.

    Args:
        credentials: A provider-batch block (OpenAI Batch, Anthropic Message Batches).
        items: The requests; each item's key is its ``custom_id`` and idempotency key.
        policy: The poll policy of each batch's wait (the block's preset if None).
        title: Names the batch in its artifacts (the provider's name if None).
        ledger: The ledger (the configured one if None).
        durable: E.g. ``DurableWait(handover_after=...)``: hand the batches still
            running to the poller service and suspend the flow run until they end
            (:mod:`~prefect_pollers.durable`); needs a deployment's run and a saved
            block.

    Returns:
        Every item's outcome, in files read on demand (:class:`OutcomeFiles`).
    """
    if durable is not None:
        return await durable.run_provider_batch(
            credentials,
            items,
            policy=policy,
            title=title or f"{credentials.provider} batch",
            ledger=ledger,
        )
    return await provider_batch_task(credentials, items, policy=policy, title=title, ledger=ledger)


async def provider_batch_task(
    credentials: ProviderBatchCredentials,
    items: Sequence[BatchItem],
    *,
    policy: PollPolicy | None,
    title: str | None,
    ledger: Ledger | None,
    wait: BatchWait | None = None,
) -> OutcomeFiles:
    """:func:`provider_batch_outcomes` in one ``provider-batch`` task run.

    Args:
        credentials: A provider-batch block.
        items: The requests.
        policy: The poll policy of each batch's wait.
        title: Names the batch in its artifacts.
        ledger: The ledger (the configured one if None).
        wait: Each batch's wait (waited here, to its end, if None).
    """
    # Quoted: Prefect would otherwise visit every item of a 100,000-item list.
    return await _provider_batch(
        credentials, quote(items), policy=policy, title=title, ledger=ledger, wait=wait
    )


@task(name="provider-batch", cache_policy=NO_CACHE)
async def _provider_batch(
    credentials: ProviderBatchCredentials,
    items: Sequence[BatchItem],
    *,
    policy: PollPolicy | None,
    title: str | None,
    ledger: Ledger | None,
    wait: BatchWait | None,
) -> OutcomeFiles:
    return await provider_batch_outcomes(
        credentials,
        items,
        policy=policy,
        title=title,
        ledger=ledger,
        logger=get_run_logger(),
        wait=wait,
    )


async def provider_batch_outcomes(
    credentials: ProviderBatchCredentials,
    items: Sequence[BatchItem],
    *,
    policy: PollPolicy | None = None,
    title: str | None = None,
    ledger: Ledger | None = None,
    client: JobApiClient[Any] | None = None,
    directory: Path | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] = _log,
    wait: BatchWait | None = None,
) -> OutcomeFiles:
    """The work of :func:`run_provider_batch`, in any task or none.

    Outside a flow run there are no artifacts (Prefect keeps them for runs).

    Args:
        credentials: A provider-batch block.
        items: The requests (see :func:`run_provider_batch`).
        policy: The poll policy of each batch's wait.
        title: Names the batch in its artifacts.
        ledger: The ledger (the configured one if None).
        client: The client (the block's shared one if None).
        directory: Where the outcome files go (:func:`outcomes_dir` if None).
        logger: Where the batches' state changes are logged.
        wait: Each batch's wait (waited here, to its end, if None). A batch it hands
            over gets no outcomes in this call, and no table artifact is published.
    """
    name = title or f"{credentials.provider} batch"
    run = _Run(
        credentials,
        policy=policy,
        ledger=ledger or current_ledger(),
        client=client or shared_client(credentials),
        directory=directory or outcomes_dir(flow_run.get_id()),
        title=name,
        logger=logger,
        wait=wait,
    )
    refused_path = run.directory / f"{credentials.provider}-refused-{_digest(items)}.jsonl"
    with OutcomeWriter(refused_path) as refused:
        lines = run.prepare(items, refused)
        packs = await run.assign(lines, refused)
    if refused.counts:
        run.refused(refused_path, refused.counts)
    else:
        refused_path.unlink()
    if run.flow_run_id is not None:  # artifacts belong to a run
        run.progress = ProviderBatchProgress(name, sum(len(one.lines) for one in packs))
        await run.progress.start()
    async with LedgerSubmitter(
        credentials, flow_run_id=run.flow_run_id, ledger=run.ledger
    ) as submitter:
        try:
            async with anyio.create_task_group() as group:
                for one in packs:
                    group.start_soon(run.run_pack, submitter, one, name=f"provider batch {one.key}")
        except BaseExceptionGroup as aborted:
            raise first_leaf(aborted) from None
    result_model = credentials.result_model
    outcomes = OutcomeFiles(
        files=run.files,
        counts=dict(run.counts),
        result_type=f"{result_model.__module__}:{result_model.__qualname__}",
        batches=[vars(summary) for summary in run.summaries],
    )
    if run.flow_run_id is not None and not run.handed_over:
        await _publish(name, outcomes)
    return outcomes


def _digest(items: Sequence[BatchItem]) -> str:
    return request_digest({"keys": [item.key for item in items]})


class OutcomeRow(BaseModel):
    """A row of a provider batch's table artifact: a count, or a failure named."""

    item: str
    outcome: str
    detail: str


FAILURES_SHOWN = 20
"""Failures named in the table artifact (the files hold them all)."""


async def _publish(title: str, outcomes: OutcomeFiles) -> None:
    """The table artifact: counts by outcome and the first failures, named (best effort)."""
    rows = [
        OutcomeRow(item="(every item)", outcome=name, detail=f"{count} items")
        for name, count in sorted(outcomes.counts.items())
    ]
    rows += [
        OutcomeRow(item=failure.key, outcome=failure.outcome.value, detail=failure.error or "")
        for failure in outcomes.failures(limit=FAILURES_SHOWN)
    ]
    await publish_table(artifact_key(f"{title}-outcomes"), f"{title}: outcomes", rows)
