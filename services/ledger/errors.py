"""The ledger's errors."""


class LedgerError(Exception):
    """The ledger cannot be opened, migrated or written."""
