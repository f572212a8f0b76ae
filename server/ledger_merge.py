"""The coordinator's merged copy of the clients' signed ledger entries.

Every reply of a client carries the head of its own ledger (ledger id, sequence number,
entry hash), its Ed25519 public key and the signed entries after the newest one the
coordinator holds, which the training message names (all of them on first contact;
``client.ledger_charge``, ``task.ledger_wire``). The coordinator imports the entries into
``<results>/ledger.sqlite`` and records each client's latest head in ``summary.json``.

Why the coordinator can neither forge nor drop a client's charges without detection:

* forge or alter: every entry is signed by the client's key, which never leaves the
  client; the merged copy verifies every signature under the key the client enrolled on
  first contact, and an auditor checks those keys against the clients' own (``fedshield
  ledger verify`` compares them with the clients' ledgers, or with keys given out of band);
* drop or reorder in the middle: each entry carries its place in its client's own hash
  chain (``seq``/``prev_hash`` of the client's ledger), so a gap or a swap breaks a link;
* drop the newest entries: the client keeps its ledger and its head; verification checks
  that the merged copy holds every client's head and the client's ledger holds every entry
  the merged copy has of it.

Import refuses anything that would not verify (a wrong signature, a gap, a re-keyed
client); such a problem is logged, kept in the summary and named by the report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from privacy.ledger import LedgerEntry, LedgerError, PrivacyLedger
from privacy.ledger.signing import public_key_id
from privacy.report.layout import MERGED_LEDGER_FILE
from server.workflow import ClientReport
from task.ledger_wire import HELD_LEDGER_KEY, HELD_SEQ_KEY

log = logging.getLogger(__name__)

# What a reply's malformed or unverifiable ledger fields raise.
_REPLY_ERRORS = (LedgerError, ValueError, KeyError, TypeError)


class CoordinatorLedger:
    """``<results>/ledger.sqlite`` and what the clients reported about their ledgers."""

    def __init__(self, results_dir: Path) -> None:
        self.path = results_dir / MERGED_LEDGER_FILE
        self.heads: dict[str, dict[str, Any]] = {}
        self.budgets: dict[str, dict[str, Any]] = {}
        self.key_ids: dict[str, str] = {}
        self.problems: list[str] = []

    def receive(self, reports: Iterable[ClientReport], server_round: int) -> None:
        """Merge the ledger fields of a round's replies; record, never raise, a problem.

        The merged ledger is opened once per round and the round's entries are written in
        one transaction (one fsync) that commits before this returns; each client's
        entries are checked on their own (:meth:`PrivacyLedger.import_groups`), so one
        client's bad entries never cost another's.
        """
        with_ledgers = [r for r in reports if r.ledger]
        for report in with_ledgers:
            fields = report.ledger
            self.budgets[report.client_id] = {
                "epsilon": fields.get("epsilon-budget"),
                "delta": fields.get("budget-delta"),
                "source": fields.get("budget-source"),
            }
        signed = [r for r in with_ledgers if "ledger-id" in r.ledger]  # no DP: no ledger
        if not signed:
            return
        try:
            merged = PrivacyLedger(self.path)
        except (LedgerError, ValueError) as error:
            for report in signed:
                self._problem(server_round, report.client_id, f"cannot open {self.path}: {error}")
            return
        with merged, merged.batch():
            groups: dict[str, list[LedgerEntry]] = {}  # by place in ``signed``
            for place, report in enumerate(signed):
                try:
                    groups[str(place)] = self._entries(report.client_id, report.ledger)
                except _REPLY_ERRORS as error:
                    self._problem(server_round, report.client_id, str(error))
            key_ids = self._enroll_new_keys(merged, server_round, signed, groups)
            outcomes = merged.import_groups(groups)
            for place, outcome in outcomes.items():
                report = signed[int(place)]
                try:
                    if isinstance(outcome, LedgerError):
                        raise outcome
                    self._record_head(merged, report.client_id, report.ledger, groups[place])
                    self.key_ids[report.client_id] = key_ids[place]
                except _REPLY_ERRORS as error:
                    self._problem(server_round, report.client_id, str(error))

    def held(self, client_id: str) -> dict[str, str | int]:
        """Training-config entries naming the newest entry of ``client_id``'s ledger that
        the merged copy holds (none before its first merge), so that the client's reply
        carries only the entries after it (``client.ledger_charge``)."""
        head = self.heads.get(client_id)
        if head is None:
            return {}
        return {HELD_LEDGER_KEY: head["ledger_id"], HELD_SEQ_KEY: int(head["seq"])}

    def _problem(self, server_round: int, client_id: str, why: str) -> None:
        problem = f"round {server_round}: ledger of {client_id} not merged: {why}"
        log.error("%s", problem)
        self.problems.append(problem)

    @staticmethod
    def _entries(client_id: str, fields: dict[str, Any]) -> list[LedgerEntry]:
        """The signed entries a reply carries, all of them its client's."""
        entries = [LedgerEntry.from_dict(json.loads(text)) for text in fields["entries"]]
        strangers = {e.charge.client_id for e in entries} - {client_id}
        if strangers:
            raise LedgerError(f"it holds entries of other clients: {sorted(strangers)}")
        return entries

    def _enroll_new_keys(self, merged: PrivacyLedger, server_round: int,
                         signed: list[ClientReport], groups: dict[str, list[LedgerEntry]]
                         ) -> dict[str, str]:
        """Enrol, in one go, the key of every reply in ``groups`` whose key was not merged
        before (a no-op for a client enrolled with it); drop the groups of the replies
        whose key is refused. Returns the key id of each reply kept, by place."""
        key_ids: dict[str, str] = {}
        pending: dict[str, tuple[str, bytes]] = {}  # place -> (client, key)
        for place in list(groups):
            client_id = signed[int(place)].client_id
            try:
                public_key = bytes.fromhex(str(signed[int(place)].ledger["public-key"]))
                key_id = public_key_id(public_key)
            except _REPLY_ERRORS as error:
                self._problem(server_round, client_id, str(error))
                del groups[place]
                continue
            key_ids[place] = key_id
            if self.key_ids.get(client_id) != key_id:
                pending[place] = (client_id, public_key)
        enrolled = merged.enroll_many(dict(pending.values())) if pending else {}
        for place, (client_id, _) in pending.items():
            if isinstance(enrolled[client_id], Exception):
                self._problem(server_round, client_id, str(enrolled[client_id]))
                del groups[place]
        return key_ids

    def _record_head(
        self, merged: PrivacyLedger, client_id: str, fields: dict[str, Any],
        entries: list[LedgerEntry],
    ) -> None:
        """Check that the head the client reported is among its entries held here (those
        just imported, or stored before), then record it."""
        ledger_id = str(fields["ledger-id"])
        head_seq, head_hash = int(fields["head-seq"]), str(fields["head-hash"])
        if head_seq:
            sent = {(e.ledger_id, e.seq): e.entry_hash for e in entries}
            # A sent entry is now stored as sent: the import refuses a differing one.
            held = sent.get((ledger_id, head_seq)) or merged.entry_hash(ledger_id, head_seq, client_id)
            if held != head_hash:
                raise LedgerError(f"its reported head (entry {head_seq}) is not among its entries")
        self.heads[client_id] = {"ledger_id": ledger_id, "seq": head_seq, "entry_hash": head_hash}

    def describe(self) -> dict[str, Any]:
        """The summary's ``ledger`` entry."""
        return {
            "merged": MERGED_LEDGER_FILE if self.path.exists() else None,
            "heads": dict(sorted(self.heads.items())),
            "key_ids": dict(sorted(self.key_ids.items())),
            "budgets": dict(sorted(self.budgets.items())),
            "problems": list(self.problems),
        }
