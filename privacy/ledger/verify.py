"""Verification of a ledger's entries: hash chain, client chains, signatures.

:func:`verify_entries` walks the entries in the order they were written and, for each,
checks in turn:

1. its place in the chain of the ledger it was first appended to: ``seq`` is the
   previous one plus one (else *sequence gap* or *order*);
2. its signer: the entry's client is enrolled and ``signer_key_id`` is that client's
   enrolled key (else *unknown signer*);
3. its hash: SHA-256 of the canonical encoding equals ``entry_hash`` (else *hash
   mismatch*, or *order* when the row holds another position's self-consistent entry);
4. its link: ``prev_hash`` is the previous entry's ``entry_hash`` (else *chain broken*);
5. its place in the client's own chain (``client_seq``, ``client_prev_hash``);
6. its signature: Ed25519 over the entry hash, under the enrolled key (else *signature
   invalid*).

Someone who can write the database but does not hold a client's private key can
therefore neither change, insert, drop nor reorder a signed entry without the walk
stopping at (or right after) that entry: every hash covers the previous hash and every
signature covers its hash (Schneier & Kelsey 1999; Crosby & Wallach 2009). Two limits
remain, as for every hash chain: dropping entries at the *tail* is only visible against
a head recorded earlier (``expected_heads``), and the trust in the enrolment registry
stored in the same file is only as good as the file; pass the keys obtained out of band
(``trusted_keys``) to remove that assumption.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .hashing import recompute_entry_hash, signing_message
from .models import GENESIS_HASH, LedgerEntry, LedgerHead
from .signing import public_key_id, verify_signature


@dataclass(frozen=True)
class BadEntry:
    """Where verification stopped and why, in plain words.

    ``seq`` is the position in the chain of ledger ``ledger_id``; for a missing entry it is
    the missing number, and ``client_id`` is filled in when the gap shows in a client's
    own chain as well (``round`` is then unknown, since the row is gone).
    """

    seq: int | None
    client_id: str | None
    round: int | None
    reason: str
    ledger_id: str | None = None


@dataclass(frozen=True)
class VerificationReport:
    """Result of a verification.

    ``entries_checked`` counts the entries that passed every check before the first
    bad one (all of them when ``ok``).
    """

    ok: bool
    entries_checked: int
    first_bad: BadEntry | None = None


def _bad(entry: LedgerEntry, reason: str) -> BadEntry:
    return BadEntry(
        seq=entry.seq,
        client_id=entry.charge.client_id,
        round=entry.charge.round,
        reason=reason,
        ledger_id=entry.ledger_id,
    )


@dataclass
class ChainState:
    """Where a walk over verified entries left their chains: per ledger id its last
    ``(seq, entry_hash)``, per (ledger id, client) its last ``(client_seq, entry_hash)``,
    and the positions already taken (to tell a reordered entry from a missing one)."""

    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    client_heads: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    seqs: defaultdict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    client_seqs: defaultdict[tuple[str, str], set[int]] = field(
        default_factory=lambda: defaultdict(set)
    )

    def add(self, ledger_id: str, seq: int, client_id: str, client_seq: int, entry_hash: str) -> None:
        """Record an entry, already verified, as the newest of its chains."""
        self.seqs[ledger_id].add(seq)
        self.client_seqs[(ledger_id, client_id)].add(client_seq)
        self.heads[ledger_id] = (seq, entry_hash)
        self.client_heads[(ledger_id, client_id)] = (client_seq, entry_hash)

    def extend(self, other: "ChainState") -> None:
        """Take in ``other``'s chains (chains of other ledgers than this state's)."""
        self.heads.update(other.heads)
        self.client_heads.update(other.client_heads)
        for origin, seqs in other.seqs.items():
            self.seqs[origin] |= seqs
        for chain, client_seqs in other.client_seqs.items():
            self.client_seqs[chain] |= client_seqs

    def copy(self) -> "ChainState":
        """An independent copy (a walk extends its own)."""
        return ChainState(
            dict(self.heads), dict(self.client_heads),
            defaultdict(set, {k: set(v) for k, v in self.seqs.items()}),
            defaultdict(set, {k: set(v) for k, v in self.client_seqs.items()}),
        )


class _Walk:
    """State of one pass over the entries."""

    def __init__(
        self,
        entries: Sequence[LedgerEntry],
        trusted_keys: Mapping[str, Ed25519PublicKey],
        after: ChainState | None = None,
    ) -> None:
        self.keys = dict(trusted_keys)
        self.key_ids = {client: public_key_id(key) for client, key in self.keys.items()}
        self.chains = after.copy() if after is not None else ChainState()
        for entry in entries:  # every position the walk will meet, for telling order from gaps
            self.chains.seqs[entry.ledger_id].add(entry.seq)
            self.chains.client_seqs[(entry.ledger_id, entry.charge.client_id)].add(entry.client_seq)

    def check(self, entry: LedgerEntry) -> BadEntry | None:
        origin, client = entry.ledger_id, entry.charge.client_id
        chain = (origin, client)
        last_seq, last_hash = self.chains.heads.get(origin, (0, GENESIS_HASH))
        last_client_seq, last_client_hash = self.chains.client_heads.get(chain, (0, GENESIS_HASH))

        expected = last_seq + 1
        if entry.seq != expected:
            if entry.seq < expected or expected in self.chains.seqs[origin]:
                return _bad(
                    entry,
                    f"order: entry out of sequence (expected entry {expected}, found entry {entry.seq})",
                )
            # The row is gone; if the next row's client also misses a client_seq, it was theirs.
            owner = client if entry.client_seq > last_client_seq + 1 else None
            return BadEntry(expected, owner, None, f"sequence gap: entry {expected} missing", origin)

        if client not in self.keys:
            return _bad(entry, f"unknown signer: client {client!r} is not enrolled")
        if entry.signer_key_id != self.key_ids[client]:
            return _bad(
                entry,
                f"unknown signer: key {entry.signer_key_id[:16]}... is not the key enrolled "
                f"for client {client!r}",
            )

        if recompute_entry_hash(entry) != entry.entry_hash:
            for other in sorted(self.chains.seqs[origin] - {entry.seq}):
                if recompute_entry_hash(entry, seq=other) == entry.entry_hash:
                    return _bad(
                        entry,
                        f"order: entry out of sequence (row at entry {entry.seq} holds entry {other})",
                    )
            return _bad(entry, "hash mismatch: content changed")

        if entry.prev_hash != last_hash:
            what = "the genesis value" if entry.seq == 1 else f"entry {entry.seq - 1}"
            return _bad(entry, f"chain broken: prev_hash does not match {what}")

        expected_client = last_client_seq + 1
        if entry.client_seq != expected_client:
            if entry.client_seq < expected_client or expected_client in self.chains.client_seqs[chain]:
                return _bad(
                    entry,
                    f"order: entry out of sequence in client {client!r}'s chain "
                    f"(expected client_seq {expected_client}, found {entry.client_seq})",
                )
            return _bad(
                entry,
                f"sequence gap: entry missing from client {client!r}'s chain "
                f"(client_seq {expected_client})",
            )
        if entry.client_prev_hash != last_client_hash:
            return _bad(
                entry,
                f"chain broken: client_prev_hash does not match client {client!r}'s entry "
                f"with client_seq {expected_client - 1}",
            )

        message = signing_message(entry.entry_hash)
        if not verify_signature(self.keys[client], entry.signature, message):
            return _bad(entry, "signature invalid")

        self.chains.add(origin, entry.seq, client, entry.client_seq, entry.entry_hash)
        return None


def verify_entries(
    entries: Sequence[LedgerEntry],
    trusted_keys: Mapping[str, Ed25519PublicKey],
    expected_heads: Iterable[LedgerHead] = (),
    after: ChainState | None = None,
) -> VerificationReport:
    """Verify ``entries`` (in the order they were written) against ``trusted_keys``.

    ``expected_heads`` are heads recorded earlier (``PrivacyLedger.head()``); each must
    still be present with the same hash, which detects truncation of the tail.
    ``after``: the entries continue chains already verified, which end there (each
    chain then starts from its recorded head instead of the genesis value).
    Stops at the first bad entry.
    """
    walk = _Walk(entries, trusted_keys, after)
    for checked, entry in enumerate(entries):
        bad = walk.check(entry)
        if bad is not None:
            return VerificationReport(ok=False, entries_checked=checked, first_bad=bad)

    by_place = {(entry.ledger_id, entry.seq): entry for entry in entries}
    for head in expected_heads:
        entry = by_place.get((head.ledger_id, head.seq))
        if entry is None:
            return VerificationReport(
                ok=False,
                entries_checked=len(entries),
                first_bad=BadEntry(
                    head.seq, None, None,
                    f"sequence gap: entry {head.seq} missing (the ledger ends before its recorded head)",
                    head.ledger_id,
                ),
            )
        if entry.entry_hash != head.entry_hash:
            return VerificationReport(
                ok=False,
                entries_checked=len(entries),
                first_bad=_bad(entry, "hash mismatch: entry differs from the recorded head"),
            )
    return VerificationReport(ok=True, entries_checked=len(entries))
