"""What one privacy charge says, and how it sits in the ledger.

:class:`PrivacyCharge` is the content: who spent how much privacy, under which
mechanism and parameters, as computed by which accountant. :class:`LedgerEntry` wraps
a charge with the fields that place it in a hash chain and bind it to the client that
signed it. Both are frozen: an entry, once built, is never edited, only appended.

Validation happens here, once, at the edge: a charge that would under-report or that
cannot be a DP charge at all (NaN or negative epsilon, negative steps, delta outside
(0, 1), ...) is refused with a ``ValueError`` that names the field.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

#: Units of privacy the ledger knows (DESIGN.md, "Privacy semantics").
UNITS: tuple[str, ...] = ("sample", "client")
#: Accountants whose epsilons the ledger records (Opacus' PRV and RDP accountants).
ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp")
#: prev_hash of the first entry of every chain (per ledger, and per client). The chain
#: is still ledger-specific because every entry hash also covers its ``ledger_id``.
GENESIS_HASH: str = "0" * 64

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LEDGER_ID = re.compile(r"^[0-9a-f]{32}$")


def utc_now_iso() -> str:
    """The current time as a UTC ISO 8601 string with microseconds and ``+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _require_str(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(f"{name} must be a non-empty string without surrounding spaces, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} must be valid UTF-8 text") from exc


_INT64_MAX = 2**63 - 1


def _require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= _INT64_MAX:
        raise ValueError(f"{name} must be in [{minimum}, 2**63 - 1], got {value}")


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{name} must be finite, got {number!r}")
    # -0.0 becomes 0.0: SQLite stores it as 0, and the hash must survive the round trip.
    return number + 0.0


@dataclass(frozen=True)
class PrivacyCharge:
    """One privacy charge: the content that is hashed and signed.

    ``epsilon_after`` is the *cumulative* epsilon of ``client_id`` in ``run_id`` for
    ``unit`` after this charge, as reported by ``accountant`` at ``delta``. The ledger
    stores it exactly as given (the caller rounds up, never down). ``steps`` counts the
    optimiser (or aggregation) steps taken in this charge only.

    Integers given for float fields are stored as floats, so that the canonical
    encoding (and therefore the hash) of an entry is the same before and after a round
    trip through the database.
    """

    run_id: str
    round: int
    client_id: str
    unit: str
    mechanism: str
    noise_multiplier: float
    clipping_norm: float
    sample_rate: float
    steps: int
    delta: float
    accountant: str
    epsilon_after: float
    dataset_size: int
    timestamp: str = field(default_factory=utc_now_iso)

    def __post_init__(self) -> None:
        for name in ("run_id", "client_id", "mechanism"):
            _require_str(name, getattr(self, name))
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        _require_int("round", self.round, 0)
        _require_int("steps", self.steps, 0)
        _require_int("dataset_size", self.dataset_size, 1)
        for name in ("noise_multiplier", "clipping_norm", "sample_rate", "delta", "epsilon_after"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        if self.noise_multiplier <= 0.0:
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier!r}")
        if self.clipping_norm <= 0.0:
            raise ValueError(f"clipping_norm must be > 0, got {self.clipping_norm!r}")
        if not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        if self.epsilon_after < 0.0:
            raise ValueError(f"epsilon_after must be >= 0, got {self.epsilon_after!r}")
        _validate_timestamp(self.timestamp)

    def to_dict(self) -> dict[str, Any]:
        """The charge as a flat dict of JSON-safe values (field name -> value)."""
        return dataclasses.asdict(self)


def _validate_timestamp(value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be a UTC ISO 8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"timestamp must be a UTC ISO 8601 string, got {value!r}") from exc
    if parsed.tzinfo is None or parsed.utcoffset() != timedelta(0):
        raise ValueError(f"timestamp must be in UTC (offset +00:00 or Z), got {value!r}")


#: Names of the content fields, in declaration order.
CHARGE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(PrivacyCharge))


@dataclass(frozen=True)
class LedgerEntry:
    """A charge in its place in the ledger, with the fields that make it tamper-evident.

    - ``ledger_id``, ``seq``, ``prev_hash``: the entry is number ``seq`` of the hash chain
      of the ledger ``ledger_id`` it was first appended to; ``prev_hash`` is the
      ``entry_hash`` of entry ``seq - 1`` (:data:`GENESIS_HASH` for entry 1).
    - ``client_seq``, ``client_prev_hash``: the same, restricted to this client's entries
      in that ledger, so that a missing charge of one client shows up even in a merged
      copy that holds many ledgers' entries.
    - ``entry_hash``: SHA-256 over the canonical encoding of the charge and every field
      above plus ``signer_key_id`` (see :mod:`privacy.ledger.hashing`).
    - ``signer_key_id``, ``signature``: the client's Ed25519 signature over the entry hash.
    """

    charge: PrivacyCharge
    ledger_id: str
    seq: int
    prev_hash: str
    client_seq: int
    client_prev_hash: str
    signer_key_id: str
    entry_hash: str
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.charge, PrivacyCharge):
            raise ValueError(f"charge must be a PrivacyCharge, got {type(self.charge).__name__}")
        if not isinstance(self.ledger_id, str) or not _LEDGER_ID.match(self.ledger_id):
            raise ValueError(f"ledger_id must be 32 lowercase hex characters, got {self.ledger_id!r}")
        _require_int("seq", self.seq, 1)
        _require_int("client_seq", self.client_seq, 1)
        for name in ("prev_hash", "client_prev_hash", "signer_key_id", "entry_hash"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _HEX64.match(value):
                raise ValueError(f"{name} must be 64 lowercase hex characters, got {value!r}")
        if not isinstance(self.signature, bytes):
            raise ValueError(f"signature must be bytes, got {type(self.signature).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (signature as hex), e.g. to ship a client's entries to the coordinator."""
        return {
            "charge": self.charge.to_dict(),
            "ledger_id": self.ledger_id,
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "client_seq": self.client_seq,
            "client_prev_hash": self.client_prev_hash,
            "signer_key_id": self.signer_key_id,
            "entry_hash": self.entry_hash,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LedgerEntry":
        """Inverse of :meth:`to_dict`. The result is *not* verified; import it to verify."""
        fields = dict(data)
        fields["charge"] = PrivacyCharge(**fields["charge"])
        fields["signature"] = bytes.fromhex(fields["signature"])
        return cls(**fields)


@dataclass(frozen=True)
class LedgerHead:
    """The last entry of one ledger's chain: publish or store it elsewhere as an anchor.

    A hash chain cannot by itself show that its *tail* was cut off; an auditor who kept
    an earlier head can (Crosby & Wallach 2009, commitments to the log).
    """

    ledger_id: str
    seq: int
    entry_hash: str
