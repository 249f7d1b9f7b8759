"""Simulator settings: timing, fates, credentials and fault-injection rules."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from prefect_pollers.testing.simulator.signing import SigningKind

FaultKind = Literal[
    "http_500",
    "http_502",
    "http_503",
    "reset",
    "reset_after_create",
    "slow",
    "burst_429",
    "malformed_json",
    "html",
    "empty",
    "missing_field",
    "mistyped_field",
    "unknown_status",
]
RouteKind = Literal["submit", "status", "result", "cancel", "upload", "list", "delete"]
CallbackFaultKind = Literal[
    "lost", "duplicated", "delayed", "out_of_order", "early", "forged", "replayed"
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _ordered(bounds: tuple[float, float]) -> tuple[float, float]:
    """Check that a (low, high) duration range is non-negative and ordered."""
    low, high = bounds
    if low < 0 or high < low:
        raise ValueError("expected (low, high) with 0 <= low <= high")
    return bounds


Duration = Annotated[tuple[float, float], AfterValidator(_ordered)]
"""A (low, high) range of simulated seconds; durations are drawn uniformly from it."""


class FaultRule(BaseModel):
    """One fault to inject into matching requests.

    A rule fires on a matching request when any of its triggers does: ``first`` (the
    first N matching requests), ``every`` (every Nth one) or ``rate`` (a probability);
    it needs at least one.
    The data-shape kinds ``missing_field``, ``mistyped_field`` and ``unknown_status``
    rewrite a status response, so they only match the status route.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = "*"
    route: RouteKind | Literal["*"] = "*"
    kind: FaultKind
    rate: Probability = 0.0
    every: int | None = Field(default=None, ge=1)
    first: int | None = Field(default=None, ge=1)
    retry_after: float | None = Field(default=None, ge=0.0)
    """Simulated seconds sent as Retry-After by the ``http_5xx`` and ``burst_429`` kinds."""
    delay_s: float = Field(default=1.0, ge=0.0)
    """Real seconds the ``slow`` kind waits before answering."""

    @model_validator(mode="after")
    def _has_a_trigger(self) -> FaultRule:
        """Refuse a rule that could never fire."""
        if self.rate == 0 and self.every is None and self.first is None:
            raise ValueError("a fault rule needs rate > 0, every or first")
        return self


class CallbackFault(BaseModel):
    """A fault of callback delivery, drawn per job with probability ``rate``.

    ``lost``: never sent; ``duplicated``: sent twice; ``delayed``: sent
    ``callback_fault_delay_s`` late; ``out_of_order``: a stale non-terminal callback
    follows the terminal one; ``early``: the job ends at once and its callback is
    sent before the submit response; ``forged``: a copy with a bad signature (or a
    bad token) is sent too; ``replayed``: the same signed request is sent again
    ``callback_fault_delay_s`` later.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: CallbackFaultKind
    rate: Annotated[float, Field(gt=0.0, le=1.0)]


_5XX: tuple[FaultKind, ...] = ("http_500", "http_502", "http_503")
_REPLACING: tuple[FaultKind, ...] = (
    "reset",
    "slow",
    "burst_429",
    "malformed_json",
    "html",
    "empty",
)
_RESHAPING: tuple[FaultKind, ...] = ("missing_field", "mistyped_field", "unknown_status")


def every_fault_kind(
    rates: dict[RouteKind, float], *, slow_s: float, reset_after_create: float
) -> list[FaultRule]:
    """Rules injecting every fault kind, by rate per route, into every provider.

    5xx come half with a Retry-After (3 simulated seconds); ``slow`` answers after
    ``slow_s`` real seconds; the data-shape kinds reshape status responses; and
    ``reset_after_create`` drops the connection after a submit created its job.
    """
    rules = []
    for route, rate in rates.items():
        for kind in _5XX:
            rules.append(FaultRule(route=route, kind=kind, rate=rate / 2))
            rules.append(FaultRule(route=route, kind=kind, rate=rate / 2, retry_after=3.0))
        for kind in _REPLACING:
            rules.append(FaultRule(route=route, kind=kind, rate=rate, delay_s=slow_s))
    status_rate = rates.get("status", 0.0)
    if status_rate:
        rules += [FaultRule(route="status", kind=kind, rate=status_rate) for kind in _RESHAPING]
    rules.append(FaultRule(route="submit", kind="reset_after_create", rate=reset_after_create))
    return rules


_APIXO_DURATIONS: dict[str, tuple[float, float]] = {
    "nano-banana": (5.0, 20.0),
    "flux-2": (10.0, 40.0),
    "sora-2": (60.0, 300.0),
    "veo-3-1": (45.0, 240.0),
    "suno": (30.0, 120.0),
}


class SimulatorConfig(BaseModel):
    """Everything the simulator can be told; every duration is in simulated seconds.

    ``time_scale`` converts simulated seconds into real ones: a 60 s job takes
    ``60 * time_scale`` real seconds, and every Retry-After or rate-limit window the
    simulator sends is scaled the same way.
    """

    model_config = ConfigDict(extra="forbid")

    time_scale: float = Field(default=1.0, gt=0.0)
    seed: int = 0
    api_key: str = "sim-key"
    failure_rate: Probability = 0.0
    never_finish_rate: Probability = 0.0
    early_poll_tolerance: float = Field(default=0.1, ge=0.0, lt=1.0)
    faults: list[FaultRule] = Field(default_factory=list)
    not_visible_for_s: float = Field(default=0.0, ge=0.0)
    """Simulated seconds after its creation during which a job is answered 404."""
    callback_secret: str | None = None
    """The secret HMAC signings use (``whsec_...`` for Standard Webhooks): callbacks
    are signed with it (none: unsigned, unless signed by Ed25519)."""
    callback_signing: dict[str, SigningKind] = Field(default_factory=dict)
    """How each provider signs its callbacks, by name (``*``: the others):
    ``standard-webhooks`` (the default), ``github``, ``stripe`` (HMACs under
    ``callback_secret``) or ``ed25519`` (fal's scheme under the simulator's key, served
    at ``/.well-known/jwks.json``)."""
    callback_faults: list[CallbackFault] = Field(default_factory=list)
    callback_fault_delay_s: float = Field(default=30.0, ge=0.0)
    """Simulated seconds by which ``delayed`` and ``replayed`` callbacks come late."""

    cache_hit_rate: Probability = 0.0
    exona_duration: Duration = (30.0, 120.0)
    exona_retry_after: float = Field(default=10.0, gt=0.0)

    twyn_config_duration: Duration = (60.0, 120.0)
    twyn_simulation_duration: Duration = (120.0, 240.0)
    twyn_analysis_duration: Duration = (60.0, 120.0)
    twyn_min_poll_interval: float = Field(default=1.0, ge=0.0)

    apixo_durations: dict[str, Duration] = Field(default_factory=lambda: dict(_APIXO_DURATIONS))
    apixo_default_duration: Duration = (10.0, 60.0)

    modelroute_duration: Duration = (2.0, 20.0)
    modelroute_cancel_rate: Probability = 0.0
    modelroute_expire_rate: Probability = 0.0
    rate_limit: int = Field(default=60, ge=1)
    rate_window_s: float = Field(default=60.0, gt=0.0)

    generic_duration: Duration = (5.0, 30.0)
    generic_retry_after: float = Field(default=5.0, gt=0.0)
    generic_timeout_rate: Probability = 0.0

    fal_duration: Duration = (5.0, 30.0)
    """How long a fal request takes, queued (a fifth) then in progress."""

    batch_duration: Duration = (60.0, 600.0)
    """How long a provider batch runs its requests (their finishes are spread over it)."""
    batch_cancelling: Duration = (2.0, 20.0)
    """How long a cancelled provider batch stays cancelling (requests in flight finish)."""
    openai_batch_validating: Duration = (2.0, 10.0)
    openai_batch_finalizing: Duration = (2.0, 10.0)
    openai_webhook_url: str | None = None
    """The URL of the project's webhook endpoint (set in OpenAI's dashboard): when set,
    every batch's end is posted there as a ``batch.<status>`` event, signed with
    ``callback_secret`` (Standard Webhooks)."""
    openai_batch_cancel_lines: Literal["omit", "batch_cancelled"] = "omit"
    """What the error file says of requests a cancelled OpenAI batch never ran."""
    batch_expire_rate: Probability = 0.0
    """Probability that a provider batch expires before all its requests finish."""
    batch_request_failure_rate: Probability = 0.0
    """Probability that one request of a provider batch fails (a server error)."""
    batch_result_bytes: int = Field(default=0, ge=0)
    """Pad each successful result's text so its line is about this many bytes (0: no pad)."""
    batch_malformed_line_rate: Probability = 0.0
    """Probability that a request's results line is written broken (not JSON)."""

    def signing(self, provider: str) -> SigningKind:
        """How ``provider`` signs its callbacks."""
        return self.callback_signing.get(
            provider, self.callback_signing.get("*", "standard-webhooks")
        )

    def real(self, simulated_seconds: float) -> float:
        """Convert simulated seconds into real seconds."""
        return simulated_seconds * self.time_scale
