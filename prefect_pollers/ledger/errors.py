"""The ledger's typed errors: a key bound to another request, a submit that may exist."""

from __future__ import annotations

from prefect_pollers.engine import BadRequestError, PollerError


class KeyReuseError(BadRequestError):
    """An idempotency key already names a submit of another request: nothing was sent."""

    advice = (
        "An idempotency key names one request: give this request a new key, or send the "
        "same request again to get its job back"
    )


class SubmitUncertainError(PollerError):
    """A submit under this key may have created its job, and the ledger cannot tell.

    Raised instead of submitting again: the provider does not deduplicate on the key,
    so a second submit could run (and bill) the job twice.
    """

    def __init__(self, message: str, *, provider: str, idempotency_key: str) -> None:
        super().__init__(
            message,
            provider=provider,
            idempotency_key=idempotency_key,
            may_have_created=True,
            advice=(
                f"See what is known with `prefect-pollers ledger show {idempotency_key}`; look "
                "for the job at the provider, and if it does not exist run "
                f"`prefect-pollers ledger release {idempotency_key}` so the next run submits it"
            ),
        )
