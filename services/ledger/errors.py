"""The ledger's errors."""

from services.errors import PersonadError


class LedgerError(PersonadError):
    """The ledger cannot be opened, migrated or written."""


class LedgerUnusable(LedgerError):
    """The ledger file cannot be used as it is: damaged, or written by a newer personad.
    Start-up stops; the file is left exactly as it was."""
