"""Tamper-evident, append-only privacy ledger (Flower-free, torch-free).

Every privacy charge is a :class:`PrivacyCharge`, appended to a :class:`PrivacyLedger`
as a :class:`LedgerEntry` that is hash-chained to the previous one and signed by the
client's :class:`ClientSigner`; :meth:`PrivacyLedger.verify` returns a
:class:`VerificationReport`.

    signer = ClientSigner.load_or_create("/keys/client-0.pem")
    ledger = PrivacyLedger("/data/ledger.sqlite")
    ledger.enroll("client-0", signer.public_key)
    ledger.append(PrivacyCharge(...), signer)
    assert ledger.verify().ok
"""

from .errors import LedgerError
from .models import ACCOUNTANTS, GENESIS_HASH, UNITS, LedgerEntry, LedgerHead, PrivacyCharge
from .signing import ClientSigner, Signer, public_key_id
from .store import PrivacyLedger
from .verify import BadEntry, VerificationReport, verify_entries

__all__ = [
    "ACCOUNTANTS",
    "BadEntry",
    "ClientSigner",
    "GENESIS_HASH",
    "LedgerEntry",
    "LedgerError",
    "LedgerHead",
    "PrivacyCharge",
    "PrivacyLedger",
    "Signer",
    "UNITS",
    "VerificationReport",
    "public_key_id",
    "verify_entries",
]
