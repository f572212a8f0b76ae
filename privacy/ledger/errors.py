"""The one exception type the ledger raises for things that are not plain bad input.

Bad field values in a charge raise :class:`ValueError` (naming the field); everything
else the ledger refuses to do (an unknown or re-keyed client, a signer that does not
match the enrolled key, an import that would not verify, an insecure key file) raises
:class:`LedgerError`.
"""

from __future__ import annotations


class LedgerError(Exception):
    """The ledger refused an operation that would weaken its guarantees."""
