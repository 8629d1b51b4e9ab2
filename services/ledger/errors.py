"""The ledger's errors."""

from services.errors import PersonadError


class LedgerError(PersonadError):
    """The ledger cannot be opened, migrated or written."""
