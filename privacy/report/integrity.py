"""Is a run's privacy ledger intact? Every ledger file's chain and signatures, cross-checked.

A run has the coordinator's merged copy (``ledger.sqlite``) and, where they are at hand
(simulation), the clients' own ledgers (``ledgers/<client-id>.sqlite``). Each file is
opened read-only and verified (hash chain, per-client chain, Ed25519 signatures; see
:mod:`privacy.ledger.verify`), then the files are checked against each other:

* the newest entry of each client's own ledger must be in the merged copy, and the
  newest entry the merged copy holds of a client's ledger must be in that client's own
  file: cutting the tail off either one is caught by the other;
* the heads the coordinator recorded in ``summary.json`` must be in the merged copy;
* a client's key must be the same everywhere it is recorded (its own ledger, the merged
  copy, ``summary.json``), or equal to the keys given out of band (``trusted_keys``).

The first problem is named exactly: which file, which entry (its number in its client's
chain), which client, which round, and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from privacy.ledger import BadEntry, LedgerEntry, LedgerError, LedgerHead, PrivacyLedger
from privacy.ledger.signing import public_key_id
from privacy.report.layout import CLIENT_LEDGER_DIR, LEDGER_SUFFIX, MERGED_LEDGER_FILE


@dataclass(frozen=True)
class LedgerCheck:
    """The verdict on one ledger file."""

    file: str  # relative to the results directory
    role: str  # "coordinator" or "client"
    client_id: str | None
    ok: bool
    entries: int
    entries_checked: int
    problem: str | None = None
    bad_entry: dict[str, Any] | None = None


@dataclass(frozen=True)
class IntegrityReport:
    """The verdict on a run: ``status`` is ``verified``, ``failed`` or ``absent``."""

    status: str
    checks: list[LedgerCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    key_source: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "verified"

    @property
    def first_problem(self) -> str | None:
        """The first problem, as one line naming the file and the entry."""
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ok": self.ok,
            "first_problem": self.first_problem,
            "problems": list(self.problems),
            "key_source": self.key_source,
            "checks": [asdict(check) for check in self.checks],
        }


@dataclass
class _Opened:
    """A ledger file read into memory (entries, enrolled keys, newest entry per chain)."""

    file: str
    role: str
    client_id: str | None
    ledger_id: str = ""
    entries: list[LedgerEntry] = field(default_factory=list)
    keys: dict[str, bytes] = field(default_factory=dict)
    ledger: PrivacyLedger | None = None
    error: str | None = None

    def heads(self) -> dict[str, LedgerHead]:
        """The newest entry of every chain held here (ledger id -> head)."""
        newest: dict[str, LedgerHead] = {}
        for entry in self.entries:
            if entry.ledger_id not in newest or entry.seq > newest[entry.ledger_id].seq:
                newest[entry.ledger_id] = LedgerHead(entry.ledger_id, entry.seq, entry.entry_hash)
        return newest


def _open(path: Path, file: str, role: str, client_id: str | None) -> _Opened:
    opened = _Opened(file, role, client_id)
    try:
        opened.ledger = PrivacyLedger(path, read_only=True)
        opened.ledger_id = opened.ledger.ledger_id
        opened.keys = opened.ledger.public_keys()
    except (LedgerError, SQLAlchemyError, OSError) as error:
        if opened.ledger is not None:
            opened.ledger.close()
            opened.ledger = None
        opened.error = f"cannot read it as a privacy ledger: {_first_line(error)}"
        return opened
    try:
        opened.entries = opened.ledger.entries()
    except (ValueError, TypeError, SQLAlchemyError):
        opened.entries = []  # an unreadable row: verify() names it
    return opened


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def describe_bad_entry(bad: BadEntry, owners: Mapping[str, str]) -> str:
    """``entry 3 of client-1's ledger (round 2): hash mismatch: content changed``."""
    client = bad.client_id or owners.get(bad.ledger_id or "", None)
    where = f"entry {bad.seq}" if bad.seq is not None else "an entry"
    if client:
        where += f" of {client}'s ledger"
    elif bad.ledger_id:
        where += f" of ledger {bad.ledger_id}"
    if bad.round is not None:
        where += f" (round {bad.round})"
    return f"{where}: {bad.reason}"


def _summary_heads(summary: Mapping[str, Any]) -> dict[str, LedgerHead]:
    """client id -> head, as the coordinator recorded them in summary.json (defensively)."""
    ledger = summary.get("ledger") if isinstance(summary, Mapping) else None
    heads = ledger.get("heads") if isinstance(ledger, Mapping) else None
    found: dict[str, LedgerHead] = {}
    for client, head in (heads or {}).items() if isinstance(heads, Mapping) else ():
        try:
            if int(head["seq"]) > 0:
                found[str(client)] = LedgerHead(str(head["ledger_id"]), int(head["seq"]), str(head["entry_hash"]))
        except (KeyError, TypeError, ValueError):
            continue
    return found


def _summary_key_ids(summary: Mapping[str, Any]) -> dict[str, str]:
    ledger = summary.get("ledger") if isinstance(summary, Mapping) else None
    key_ids = ledger.get("key_ids") if isinstance(ledger, Mapping) else None
    return {str(k): str(v) for k, v in key_ids.items()} if isinstance(key_ids, Mapping) else {}


def _key_problems(
    merged: _Opened, clients: list[_Opened], summary_key_ids: Mapping[str, str],
    trusted_keys: Mapping[str, bytes] | None,
) -> list[str]:
    """Every place a client's key is recorded must agree (or match the trusted keys)."""
    problems: list[str] = []
    recorded: dict[str, list[tuple[str, str]]] = {}
    for opened in [merged, *clients]:
        for client, raw in opened.keys.items():
            if opened.role == "client" and client != opened.client_id:
                continue
            recorded.setdefault(client, []).append((opened.file, public_key_id(raw)))
    for client, key_id in summary_key_ids.items():
        recorded.setdefault(client, []).append(("summary.json", key_id))
    for client, places in sorted(recorded.items()):
        if trusted_keys is not None:
            if client not in trusted_keys:
                problems.append(f"{places[0][0]}: client {client} is not among the trusted keys")
                continue
            reference = ("the trusted keys", public_key_id(trusted_keys[client]))
        else:
            reference = places[0]
        for place, key_id in places:
            if key_id != reference[1]:
                problems.append(
                    f"{place}: {client}'s key {key_id[:16]}... differs from its key in "
                    f"{reference[0]} ({reference[1][:16]}...)"
                )
                break
    return problems


def _verify_file(
    opened: _Opened, trusted_keys: Mapping[str, bytes] | None, expected: list[LedgerHead],
    owners: Mapping[str, str],
) -> LedgerCheck:
    if opened.error is not None or opened.ledger is None:
        return LedgerCheck(opened.file, opened.role, opened.client_id, False, 0, 0, opened.error)
    try:
        report = opened.ledger.verify(trusted_keys=trusted_keys, expected_heads=expected)
    except (LedgerError, SQLAlchemyError) as error:
        return LedgerCheck(opened.file, opened.role, opened.client_id, False, len(opened.entries), 0,
                           f"cannot verify it: {_first_line(error)}")
    finally:
        opened.ledger.close()
    if report.ok:
        return LedgerCheck(opened.file, opened.role, opened.client_id, True, len(opened.entries),
                           report.entries_checked)
    bad = report.first_bad
    assert bad is not None
    return LedgerCheck(
        opened.file, opened.role, opened.client_id, False, len(opened.entries),
        report.entries_checked, describe_bad_entry(bad, owners), asdict(bad),
    )


def verify_run(
    results_dir: Path,
    summary: Mapping[str, Any] | None = None,
    trusted_keys: Mapping[str, bytes] | None = None,
) -> IntegrityReport:
    """Verify every ledger of the run in ``results_dir`` (see the module docstring)."""
    summary = summary or {}
    merged_path = results_dir / MERGED_LEDGER_FILE
    client_paths = sorted((results_dir / CLIENT_LEDGER_DIR).glob(f"*{LEDGER_SUFFIX}"))
    if not merged_path.exists():
        recorded = isinstance(summary.get("ledger"), Mapping) and summary["ledger"].get("merged")
        if not recorded:
            return IntegrityReport("absent", problems=[f"{MERGED_LEDGER_FILE}: this run has no privacy ledger"])
        return IntegrityReport("failed", problems=[f"{MERGED_LEDGER_FILE}: missing, but summary.json records it"])

    merged = _open(merged_path, MERGED_LEDGER_FILE, "coordinator", None)
    clients = [
        _open(path, f"{CLIENT_LEDGER_DIR}/{path.name}", "client", path.name[: -len(LEDGER_SUFFIX)])
        for path in client_paths
    ]
    owners = {c.ledger_id: c.client_id for c in clients if c.ledger_id and c.client_id}
    summary_heads = _summary_heads(summary)
    owners.update({head.ledger_id: client for client, head in summary_heads.items()})
    for entry in merged.entries:
        owners.setdefault(entry.ledger_id, entry.charge.client_id)

    merged_heads = merged.heads()
    expected_in_merged = list(summary_heads.values())
    expected_in_merged += [h for c in clients for h in c.heads().values() if h.ledger_id == c.ledger_id]
    checks = [_verify_file(merged, trusted_keys, expected_in_merged, owners)]
    for opened in clients:
        own_head = merged_heads.get(opened.ledger_id)
        checks.append(_verify_file(opened, trusted_keys, [own_head] if own_head else [], owners))

    problems = [f"{check.file}: {check.problem}" for check in checks if not check.ok]
    problems += _key_problems(merged, clients, _summary_key_ids(summary), trusted_keys)
    key_source = (
        "keys given out of band" if trusted_keys is not None
        else "keys recorded by the clients' own ledgers" if clients
        else "keys enrolled in the coordinator's copy on first contact"
    )
    return IntegrityReport("failed" if problems else "verified", checks, problems, key_source)
