"""The ledger: the truth about every submit (reservations, refs), in SQLite or PostgreSQL.

See :mod:`prefect_pollers.ledger.submitter` for the protocol and
:mod:`prefect_pollers.ledger.settings` for where it lives.
"""

from prefect_pollers.ledger.errors import KeyReuseError, SubmitUncertainError
from prefect_pollers.ledger.settings import ledger_url
from prefect_pollers.ledger.store import Ledger, Owner, SubmitRow, SubmitState, current_ledger
from prefect_pollers.ledger.submitter import LedgerSubmitter, endpoint_of

__all__ = [
    "KeyReuseError",
    "Ledger",
    "LedgerSubmitter",
    "Owner",
    "SubmitRow",
    "SubmitState",
    "SubmitUncertainError",
    "current_ledger",
    "endpoint_of",
    "ledger_url",
]
