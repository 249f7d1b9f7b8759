"""What the two provider-batch simulations share: request plans, result streams, counters.

A provider batch is one job that carries many requests. When the batch is created,
each request is given its outcome and the instant of its run at which it finishes;
the plan keeps them in flat arrays (about 17 bytes a request), counts at any instant
are binary searches, and result lines are generated from the plan when a client
downloads them, a chunk at a time: no results file is ever held in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from prefect_pollers.testing.simulator.errors import Invalid, Refusal
from prefect_pollers.testing.simulator.jobs import Job
from prefect_pollers.testing.simulator.provider import Provider, Reply

SUCCEEDS = 0
FAILS = 1
"""A random per-request failure (``batch_request_failure_rate``): a server error."""
DOOMED = 2
"""A request whose JSON contains "FAIL": an invalid-request error."""
_FATE = 3
_MALFORMED = 4

WINDOW_S = 86_400.0
"""The completion window of both vendors' batches: 24 h (scaled by ``time_scale``)."""
CHUNK_BYTES = 64 * 1024
"""Result streams are sent in chunks of about this many bytes."""
_FILLER = "lorem ipsum dolor sit amet "

Line = tuple[str, bool]
"""A results line and whether it is written broken."""


@dataclass(slots=True, eq=False)
class RequestPlan:
    """When each request of a batch finishes, and how, in input order.

    Attributes:
        offsets: Real seconds after ``start`` at which each request finishes.
        flags: Each request's fate (:data:`SUCCEEDS`, :data:`FAILS`, :data:`DOOMED`),
            plus a bit for a broken results line.
        succeeded: Sorted offsets of the requests that succeed.
        failed: Sorted offsets of the requests that fail.
        start: Real monotonic instant at which the requests start running.
        stop: Offset at which requests stop (expiry, cancellation): those finishing
            at or after it never do.
    """

    offsets: array[float]
    flags: bytearray
    succeeded: array[float]
    failed: array[float]
    start: float = 0.0
    stop: float = math.inf

    def __len__(self) -> int:
        """Number of requests."""
        return len(self.flags)

    def finished(self, index: int) -> bool:
        """Whether request ``index`` finishes before the batch stops."""
        return self.offsets[index] < self.stop

    def fate(self, index: int) -> int:
        """Request ``index``'s fate."""
        return self.flags[index] & _FATE

    def malformed(self, index: int) -> bool:
        """Whether request ``index``'s results line is written broken."""
        return bool(self.flags[index] & _MALFORMED)

    def done(self, now: float) -> tuple[int, int]:
        """How many requests succeeded and how many failed by ``now``."""
        elapsed = now - self.start
        if elapsed < self.stop:
            return bisect_right(self.succeeded, elapsed), bisect_right(self.failed, elapsed)
        return bisect_left(self.succeeded, self.stop), bisect_left(self.failed, self.stop)

    def stop_at(self, instant: float) -> None:
        """Stop the requests still running at ``instant`` (none start after it)."""
        self.stop = min(self.stop, max(0.0, instant - self.start))


@dataclass
class BatchStats:
    """Counters of the provider-batch simulations, added to the common ones."""

    files_uploaded: int = 0
    files_deleted: int = 0
    batches_by_key: Counter[str] = field(default_factory=Counter)
    results_bytes_served: int = 0
    malformed_lines_written: int = 0


def digest(texts: Iterable[str]) -> str:
    """A short stable digest of ``texts`` (per-request ids, custom_id sets)."""
    return hashlib.blake2b("\n".join(texts).encode(), digest_size=12).hexdigest()


def broken(line: str) -> str:
    """The first half of a JSON line: never valid JSON, yet it names its custom_id."""
    return line[: max(1, len(line) // 2)]


class HasJob(Protocol):
    """A provider's record of one batch."""

    @property
    def job(self) -> Job:
        """The batch's job."""
        ...


Record = TypeVar("Record", bound=HasJob)


def newest_first(records: dict[str, Record]) -> list[Record]:
    """Batch records, the most recently created first."""
    return sorted(records.values(), key=lambda record: record.job.seq, reverse=True)


def position(records: list[Record], batch_id: str, param: str) -> int:
    """Where the batch ``batch_id`` is in ``records`` (a list cursor), or 400."""
    for index, record in enumerate(records):
        if record.job.id == batch_id:
            return index
    raise Invalid(param, f"no batch with id {batch_id!r}")


def wall(job: Job, instant: float) -> float:
    """Epoch time of ``job``'s real monotonic ``instant``."""
    return job.created_wall + (instant - job.created)


class BatchProvider(Provider):
    """A provider whose jobs are batches of requests with downloadable results."""

    def reset(self) -> None:
        """Also forget the batch counters."""
        super().reset()
        self.batch_stats = BatchStats()

    def extra_stats(self) -> dict[str, Any]:
        """Batches created (and per key), result bytes and broken lines served."""
        return {
            "batches_created": self.stats.ledger.total,
            "batches_by_key": dict(self.batch_stats.batches_by_key),
            "status_calls_max": max(self.stats.status_calls_per_job.values(), default=0),
            "results_bytes_served": self.batch_stats.results_bytes_served,
            "malformed_lines_written": self.batch_stats.malformed_lines_written,
        }

    def refusal_reply(self, refusal: Refusal) -> Reply:
        """Answer a malformed body with 400, as both vendors do (never 422)."""
        if isinstance(refusal, Invalid):
            refusal = Refusal(400, "invalid_request_error", refusal.message)
        return super().refusal_reply(refusal)

    def plan(self, doomed: Iterable[bool], duration: float) -> RequestPlan:
        """Draw each request's fate and finish (uniform over ``duration`` simulated s)."""
        failure_rate = self.config.batch_request_failure_rate
        malformed_rate = self.config.batch_malformed_line_rate
        offsets: array[float] = array("d")
        flags = bytearray()
        for is_doomed in doomed:
            offsets.append(self.config.real(self.rng.uniform(0.0, duration)))
            fate = SUCCEEDS
            if is_doomed:
                fate = DOOMED
            elif failure_rate and self.rng.random() < failure_rate:
                fate = FAILS
            if malformed_rate and self.rng.random() < malformed_rate:
                fate |= _MALFORMED
            flags.append(fate)
        succeeded, failed = array("d"), array("d")
        for offset, fate in zip(offsets, flags, strict=True):
            (succeeded if fate & _FATE == SUCCEEDS else failed).append(offset)
        return RequestPlan(
            offsets, flags, array("d", sorted(succeeded)), array("d", sorted(failed))
        )

    def new_batch(
        self, request: Request, batch_id: str, phases: list[tuple[str, float]], terminal: str
    ) -> Job:
        """Create a batch's job; its ``data["expires_at"]`` is the end of its window (epoch)."""
        job = self.new_job(request, batch_id, phases, terminal)
        job.data["expires_at"] = job.created_wall + self.config.real(WINDOW_S)
        return job

    def draw_expiry(self, plan: RequestPlan) -> float | None:
        """Simulated seconds into its run at which a batch expires, or None if it does not.

        An expiring batch stops at a point drawn from the middle half of the time its
        requests need, so at least its last request is cut off.
        """
        if not plan or self.rng.random() >= self.config.batch_expire_rate:
            return None
        run = max(plan.offsets) / self.config.time_scale
        expires_after = self.rng.uniform(0.25, 0.75) * run
        plan.stop = self.config.real(expires_after)
        return expires_after

    def begin_cancel(self, job: Job, cancelling: str, terminal: str) -> float:
        """Make ``job`` ``cancelling`` now and ``terminal`` after the cancelling span.

        The job ends sooner if its run would have ended sooner. The ledger books the
        cancellation at once. Returns the real instant at which the job turns terminal.
        """
        now = self.now()
        ends_at = min(job.end, now + self.config.real(self.draw(self.config.batch_cancelling)))
        self.cancel(job, terminal)
        job.phases = (*(phase for phase in job.phases if phase[1] <= now), (cancelling, ends_at))
        job.end = ends_at
        return ends_at

    def padded(self, build: Callable[[str, int], dict[str, Any]], text: str) -> str:
        """``build(text, output_tokens)`` as a JSON line, padded to ``batch_result_bytes``.

        The padding is spliced into the encoded text (plain words need no escaping),
        so a long line is encoded once; the tokens count the padded text.
        """
        target = self.config.batch_result_bytes
        line = json.dumps(build(text, max(1, max(len(text), target) // 4)))
        missing = target - len(line) - 1
        if missing <= 0:
            return line
        quoted = json.dumps(text)[:-1]
        filler = _FILLER * (missing // len(_FILLER) + 1)
        return line.replace(quoted, f"{quoted} {filler[:missing]}", 1)

    def stream(self, lines: Iterator[Line], media_type: str) -> Reply:
        """A reply that streams ``lines`` (newline-separated, no blank line), counted."""

        async def chunks() -> AsyncIterator[bytes]:
            """Join lines into chunks of about :data:`CHUNK_BYTES`."""
            buffer: list[str] = []
            size = 0
            for index, (line, malformed) in enumerate(lines):
                if malformed:
                    self.batch_stats.malformed_lines_written += 1
                text = broken(line) if malformed else line
                buffer.append(text if index == 0 else "\n" + text)
                size += len(text) + 1
                if size >= CHUNK_BYTES:
                    yield self._served("".join(buffer))
                    buffer, size = [], 0
            if buffer:
                yield self._served("".join(buffer))

        return Reply(200, {}, response=StreamingResponse(chunks(), media_type=media_type))

    def _served(self, text: str) -> bytes:
        """Encode a chunk of results and count its bytes."""
        data = text.encode()
        self.batch_stats.results_bytes_served += len(data)
        return data


def file_size(lines: Iterator[Line]) -> int:
    """Size in bytes of the file ``lines`` make, computed without holding it."""
    size = -1
    for line, malformed in lines:
        size += len((broken(line) if malformed else line).encode()) + 1
    return max(size, 0)
