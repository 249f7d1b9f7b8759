"""Refusals: the error responses a provider gives instead of doing what was asked."""

from __future__ import annotations


class Refusal(Exception):
    """Stop handling a request and answer with an error in the provider's format."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        """Describe the error.

        Args:
            status: HTTP status code.
            code: Machine-readable error code.
            message: Human-readable explanation.
            retry_after: Real seconds to send as ``Retry-After``, if any.
        """
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Invalid(Refusal):
    """A request body broke the contract (422); the message names the field and why."""

    def __init__(self, field: str, reason: str) -> None:
        """Record the field path (e.g. ``"input.prompt"``) and what is wrong with it."""
        super().__init__(422, "validation_error", f"{field}: {reason}")
