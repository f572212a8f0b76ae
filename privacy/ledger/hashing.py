"""Canonical encoding, entry hashes and the signed message.

What is hashed: every content field of the :class:`~privacy.ledger.models.PrivacyCharge`
plus ``ledger_id``, ``seq``, ``prev_hash``, ``client_seq``, ``client_prev_hash``,
``signer_key_id`` and a format tag, encoded as canonical JSON (keys sorted, no
whitespace, UTF-8, floats as Python's shortest round-tripping ``repr``, NaN/inf refused).
Because each hash covers the previous entry's hash, changing, dropping or reordering any
entry breaks every later link: the hash-chained log of Schneier & Kelsey (1999),
"Secure Audit Logs to Support Computer Forensics", and Crosby & Wallach (2009),
"Efficient Data Structures for Tamper-Evident Logging".

What is signed: ``SIGNATURE_CONTEXT + bytes.fromhex(entry_hash)``. The context string
keeps a ledger signature from ever being valid for another protocol that might use the
same client key. Signing the hash (and not only the charge) makes the signer vouch for
the chain position too, so an attacker who cannot sign cannot re-link the chain around
a deleted or moved entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from .models import LedgerEntry, PrivacyCharge

#: Identifies the encoding; part of every hash so a future format cannot collide with it.
HASH_FORMAT = "fedshield.privacy-ledger.v1"
#: Prefix of every signed message (domain separation).
SIGNATURE_CONTEXT = b"fedshield/privacy-ledger/v1/entry-hash\x00"


def canonical_json(payload: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, ``,``/``:`` separators, UTF-8, floats via ``repr``."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


#: The fields of :class:`~privacy.ledger.models.LedgerEntry` hashed next to the charge and
#: :data:`HASH_FORMAT`: all but ``charge``, ``entry_hash`` and ``signature``, in declaration
#: order (``ledger_id``, ``seq``, ``prev_hash``, ``client_seq``, ``client_prev_hash``,
#: ``signer_key_id``).
CHAIN_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(LedgerEntry)
    if f.name not in {"charge", "entry_hash", "signature"}
)


def hash_payload(charge: PrivacyCharge, **position: Any) -> dict[str, Any]:
    """The dict whose canonical JSON is hashed into ``entry_hash``.

    Raises:
        TypeError: ``position`` is not exactly the keyword arguments :data:`CHAIN_FIELDS`.
    """
    if set(position) != set(CHAIN_FIELDS):
        raise TypeError(
            f"an entry's chain position takes exactly the keyword arguments "
            f"{list(CHAIN_FIELDS)}, got {sorted(position)}"
        )
    payload = charge.to_dict()
    payload.update(position, format=HASH_FORMAT)
    return payload


def compute_entry_hash(charge: PrivacyCharge, **position: Any) -> str:
    """Hex SHA-256 of the canonical JSON of :func:`hash_payload`."""
    return hashlib.sha256(canonical_json(hash_payload(charge, **position))).hexdigest()


def recompute_entry_hash(entry: LedgerEntry, *, seq: int | None = None) -> str:
    """The hash ``entry`` should carry (optionally as if it were entry number ``seq``)."""
    position: dict[str, Any] = {name: getattr(entry, name) for name in CHAIN_FIELDS}
    if seq is not None:
        position["seq"] = seq
    return compute_entry_hash(entry.charge, **position)


def signing_message(entry_hash: str) -> bytes:
    """The exact bytes a client signs for an entry: context prefix + raw 32-byte hash."""
    return SIGNATURE_CONTEXT + bytes.fromhex(entry_hash)
