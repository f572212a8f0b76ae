"""Tests of the tamper-evident privacy ledger: real SQLite files, real Ed25519, no mocks.

Tampering is done the way an attacker with disk access would do it: with the sqlite3
module, after dropping the append-only triggers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
from sqlalchemy import event
from sqlalchemy.engine.interfaces import CacheStats

from privacy.ledger import (
    GENESIS_HASH,
    ClientSigner,
    LedgerEntry,
    LedgerError,
    PrivacyCharge,
    PrivacyLedger,
    VerificationReport,
)
from privacy.ledger.hashing import HASH_FORMAT, SIGNATURE_CONTEXT, compute_entry_hash, signing_message

SPAWN = multiprocessing.get_context("spawn")


def _charge(client_id: str, round: int, epsilon: float, /, **overrides: object) -> PrivacyCharge:
    fields: dict[str, object] = dict(
        run_id="run-1",
        round=round,
        client_id=client_id,
        unit="sample",
        mechanism="subsampled_gaussian",
        noise_multiplier=1.1,
        clipping_norm=1.0,
        sample_rate=0.01,
        steps=100,
        delta=1e-5,
        accountant="prv",
        epsilon_after=epsilon,
        dataset_size=6000,
    )
    fields.update(overrides)
    return PrivacyCharge(**fields)  # type: ignore[arg-type]


def _tamper(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """What an attacker with the file can do: drop the guard triggers and rewrite rows."""
    con = sqlite3.connect(path)
    try:
        for table in ("ledger_entries", "client_keys", "ledger_meta"):
            for action in ("update", "delete"):
                con.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
        for sql, params in statements:
            con.execute(sql, params)
        con.commit()
    finally:
        con.close()


def _row(path: Path, seq: int) -> dict[str, object]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return dict(con.execute("SELECT * FROM ledger_entries WHERE seq = ?", (seq,)).fetchone())
    finally:
        con.close()


@contextmanager
def _statements(ledger: PrivacyLedger) -> Iterator[list[str]]:
    """The first word of every statement that reaches SQLite inside the block (white-box:
    the process's engine for ledger files)."""
    statements: list[str] = []
    engine = ledger._database.engine
    listener = lambda *args: statements.append(args[2].split()[0])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def _client_ledgers(
    tmp_path: Path, clients: str
) -> tuple[dict[str, ClientSigner], dict[str, PrivacyLedger], dict[str, list[LedgerEntry]]]:
    """A local ledger per client with charges for rounds 1 and 2: signers, ledgers, entries."""
    signers = {client: ClientSigner.generate() for client in clients}
    local = {}
    for client, signer in signers.items():
        local[client] = PrivacyLedger(tmp_path / f"client-{client}.sqlite")
        local[client].enroll(client, signer.public_key)
        for round in (1, 2):
            local[client].append(_charge(client, round, float(round)), signer)
    return signers, local, {client: ledger.entries() for client, ledger in local.items()}


@pytest.fixture
def populated(tmp_path: Path):
    """A shared ledger file: clients a and b, three rounds each, alternating (seq 1..6)."""
    path = tmp_path / "ledger.sqlite"
    signers = {"a": ClientSigner.generate(), "b": ClientSigner.generate()}
    ledger = PrivacyLedger(path)
    for client, signer in signers.items():
        ledger.enroll(client, signer.public_key)
    for round in (1, 2, 3):
        for client in ("a", "b"):
            ledger.append(_charge(client, round, 0.5 * round), signers[client])
    yield ledger, path, signers
    ledger.close()


# -- content and encoding ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epsilon_after", float("nan")),
        ("epsilon_after", -0.1),
        ("epsilon_after", float("inf")),
        ("steps", -1),
        ("dataset_size", 2**63),
        ("delta", 0.0),
        ("delta", 1.0),
        ("delta", 1.5),
        ("sample_rate", 0.0),
        ("noise_multiplier", 0.0),
        ("round", True),
        ("unit", "patient"),
        ("accountant", "moments"),
        ("timestamp", "2025-01-01T10:00:00+02:00"),
        ("timestamp", "2025-01-01T10:00:00"),
        ("client_id", ""),
    ],
)
def test_invalid_charge_is_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        _charge("a", 1, 1.0, **{field: value})


def test_entry_hash_is_sha256_of_canonical_json_and_signature_covers_it(tmp_path: Path) -> None:
    signer = ClientSigner.generate()
    with PrivacyLedger(tmp_path / "l.sqlite") as ledger:
        ledger.enroll("a", signer.public_key)
        first = ledger.append(_charge("a", 1, 0.1 + 0.2), signer)
        second = ledger.append(_charge("a", 2, 0.7), signer)

    payload = dataclasses.asdict(first.charge) | {
        "format": HASH_FORMAT,
        "ledger_id": first.ledger_id,
        "seq": 1,
        "prev_hash": "0" * 64,
        "client_seq": 1,
        "client_prev_hash": "0" * 64,
        "signer_key_id": signer.public_key_id,
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert "0.30000000000000004" in encoded  # floats via repr, not rounded
    assert first.entry_hash == hashlib.sha256(encoded.encode("utf-8")).hexdigest()
    assert first.prev_hash == first.client_prev_hash == GENESIS_HASH
    assert (second.seq, second.prev_hash, second.client_seq, second.client_prev_hash) == (
        2, first.entry_hash, 2, first.entry_hash,
    )
    # The client's signature is over the context-prefixed entry hash.
    signer.public_key.verify(first.signature, SIGNATURE_CONTEXT + bytes.fromhex(first.entry_hash))
    assert signer.public_key_id == hashlib.sha256(signer.public_key_bytes).hexdigest()


def test_entries_round_trip_exactly_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    signer = ClientSigner.generate()
    awkward = dict(
        noise_multiplier=1 / 7, clipping_norm=0.1 + 0.2, sample_rate=2 / 3, delta=1e-5 / 3,
        dataset_size=2**40, steps=2**33,
    )
    with PrivacyLedger(path) as ledger:
        ledger.enroll("a", signer.public_key)
        written = [
            ledger.append(_charge("a", 0, -0.0, **awkward), signer),  # stored as 0.0 by SQLite
            ledger.append(_charge("a", 1, 1 / 3, **awkward), signer),
            ledger.append(_charge("a", 2, 12345.678901234567, **awkward), signer),
            ledger.append(_charge("a", 3, 1.7976931348623157e308, **awkward), signer),
        ]
    with PrivacyLedger(path, create=False) as reopened:
        assert reopened.entries() == written
        assert reopened.verify().ok
        assert str(reopened.entries()[0].charge.epsilon_after) == "0.0"
    again = [LedgerEntry.from_dict(json.loads(json.dumps(e.to_dict()))) for e in written]
    assert again == written


def test_sqlalchemy_url_is_accepted_and_missing_ledger_refused(tmp_path: Path) -> None:
    path = tmp_path / "u.sqlite"
    with PrivacyLedger(f"sqlite:///{path}") as by_url, PrivacyLedger(path) as by_path:
        assert by_url.ledger_id == by_path.ledger_id
    with pytest.raises(LedgerError):
        PrivacyLedger(tmp_path / "absent.sqlite", create=False)


def test_sqlite_runs_in_wal_mode_with_synchronous_full(tmp_path: Path) -> None:
    with PrivacyLedger(tmp_path / "l.sqlite") as ledger:
        with ledger._database.connect() as conn:  # white-box: the pragmas of a pooled connection
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def _open_files(path: Path) -> list[str]:
    """What of ``path`` (the file, its WAL or its shared memory) this process holds open."""
    links = (os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
             if os.path.exists(f"/proc/self/fd/{fd}"))
    return [link for link in links if link.startswith(str(path))]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list open files")
def test_a_closed_ledger_holds_no_file_and_reopening_reads_the_file_as_it_is_now(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.sqlite"
    signer = ClientSigner.generate()
    with PrivacyLedger(path) as ledger:
        ledger.enroll("a", signer.public_key)
        first = ledger.append(_charge("a", 1, 1.0), signer)
        first_id = ledger.ledger_id
    assert _open_files(path) == []
    saved = path.read_bytes()  # cleanly closed: the WAL is checkpointed into the file
    with PrivacyLedger(path) as ledger:
        ledger.append(_charge("a", 2, 2.0), signer)
    path.write_bytes(saved)  # the file restored from the copy, as a backup would be
    with PrivacyLedger(path, create=False) as reopened:
        assert reopened.entries() == [first] and reopened.ledger_id == first_id
    path.unlink()
    with PrivacyLedger(path) as fresh:  # a new file at the same path is a new ledger
        assert fresh.entries() == [] and fresh.ledger_id != first_id
    assert _open_files(path) == []


def _round_of_a_client(ledger: PrivacyLedger, client_id: str) -> None:
    """What a client's ledger does in a round: enrol, read, charge, publish."""
    signer = ClientSigner.generate()
    ledger.enroll(client_id, signer.public_key)
    ledger.entries(client_id=client_id)
    ledger.latest_epsilon(client_id, "run-1")
    ledger.append(_charge(client_id, 1, 1.0), signer)
    ledger.head()


def test_ledger_files_share_compiled_statements_and_nothing_else(tmp_path: Path) -> None:
    with PrivacyLedger(tmp_path / "first.sqlite") as first:
        _round_of_a_client(first, "a")
        engine = first._database.engine  # white-box: the process's engine for ledger files
    compiled: dict[str, bool] = {}  # statement -> compiled afresh for it

    def record(_conn, _cursor, statement, _params, context, _many) -> None:
        if context.compiled is not None and not statement.lstrip().startswith("CREATE"):
            compiled[statement] = compiled.get(statement, False) or context.cache_hit == CacheStats.CACHE_MISS

    event.listen(engine, "after_cursor_execute", record)
    try:
        with PrivacyLedger(tmp_path / "second.sqlite") as second:
            _round_of_a_client(second, "b")
    finally:
        event.remove(engine, "after_cursor_execute", record)
    # The new file's whole round ran through the shared engine, and (its schema's DDL
    # aside) on statements the first file's round had compiled.
    assert len(compiled) >= 8 and not any(compiled.values())
    for name, client in (("first", "a"), ("second", "b")):  # each file holds its own round
        with PrivacyLedger(tmp_path / f"{name}.sqlite", create=False) as ledger:
            assert ledger.clients() == [client] and ledger.verify().ok
            assert [entry.charge.client_id for entry in ledger.entries()] == [client]


_READ_ON_MOUNT = """
import json, sys
from privacy.ledger import LedgerError, PrivacyLedger, ClientSigner
with PrivacyLedger(sys.argv[1], read_only=True) as ledger:
    try:
        ledger.enroll("intruder", ClientSigner.generate().public_key)
        refused = False
    except LedgerError:
        refused = True
    print(json.dumps({"clients": ledger.clients(), "entries": len(ledger.entries()),
                      "ok": ledger.verify().ok, "refused": refused, "ledger": repr(ledger)}))
"""


def test_a_ledger_on_a_read_only_mount_opens_read_only(tmp_path: Path) -> None:
    # An auditor's copy on a read-only mount: SQLite cannot create the WAL index beside a
    # WAL-mode file there, so the ledger is opened as immutable instead.
    source, mount = tmp_path / "source", tmp_path / "mount"
    source.mkdir(), mount.mkdir()
    signer = ClientSigner.generate()
    with PrivacyLedger(source / "l.sqlite") as ledger:
        ledger.enroll("a", signer.public_key)
        ledger.append(_charge("a", 1, 1.0), signer)
    script = tmp_path / "read.py"
    script.write_text(_READ_ON_MOUNT)
    namespace = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if namespace.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {namespace.stderr.decode().strip()}")
    command = (f"mount --bind -o ro {source} {mount} && "
               f"{sys.executable} {script} {mount / 'l.sqlite'}")
    done = subprocess.run(["unshare", "--mount", "sh", "-c", command], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["clients"] == ["a"] and seen["entries"] == 1 and seen["ok"] and seen["refused"]
    assert "immutable=1" in seen["ledger"]


def test_in_memory_ledgers_are_separate_databases() -> None:
    with PrivacyLedger("sqlite://") as one, PrivacyLedger("sqlite://") as two:
        one.enroll("a", ClientSigner.generate().public_key)
        assert one.ledger_id != two.ledger_id
        assert one.clients() == ["a"] and two.clients() == []


# -- enrolment and append rules --------------------------------------------------------


def test_enrolment_is_write_once(tmp_path: Path) -> None:
    a, b, intruder = ClientSigner.generate(), ClientSigner.generate(), ClientSigner.generate()
    with PrivacyLedger(tmp_path / "l.sqlite") as ledger:
        assert ledger.enroll("a", a.public_key) == a.public_key_id
        assert ledger.enroll("a", a.public_key_bytes) == a.public_key_id  # same key: no-op
        with pytest.raises(LedgerError, match="already enrolled"):
            ledger.enroll("a", intruder.public_key)
        with pytest.raises(LedgerError, match="already enrolled for client 'a'"):
            ledger.enroll("b", a.public_key)
        ledger.enroll("b", b.public_key)
        assert ledger.public_keys() == {"a": a.public_key_bytes, "b": b.public_key_bytes}


def test_enroll_many_refuses_a_client_alone_and_inserts_the_rest_at_once(tmp_path: Path) -> None:
    a, b, c, intruder = (ClientSigner.generate() for _ in range(4))
    with PrivacyLedger(tmp_path / "l.sqlite") as ledger:
        ledger.enroll("a", a.public_key)
        with _statements(ledger) as statements:
            outcomes = ledger.enroll_many({
                "a": intruder.public_key,     # enrolled with another key
                "b": b.public_key,
                "c": c.public_key_bytes,
                "d": b.public_key,            # b's key, claimed by another client
                " e": c.public_key,           # malformed id
                "f": b"\x01" * 31,            # not a key
            })
        assert (outcomes["b"], outcomes["c"]) == (b.public_key_id, c.public_key_id)
        assert isinstance(outcomes["a"], LedgerError) and "re-enrolling" in str(outcomes["a"])
        assert isinstance(outcomes["d"], LedgerError) and "for client 'b'" in str(outcomes["d"])
        assert isinstance(outcomes[" e"], ValueError)
        assert isinstance(outcomes["f"], LedgerError) and "32 raw bytes" in str(outcomes["f"])
        assert statements.count("INSERT") == 1
        assert ledger.public_keys() == {"a": a.public_key_bytes, "b": b.public_key_bytes,
                                        "c": c.public_key_bytes}
        assert ledger.enroll_many({"b": b.public_key}) == {"b": b.public_key_id}  # no-op


def test_append_requires_the_enrolled_key(tmp_path: Path) -> None:
    a, other = ClientSigner.generate(), ClientSigner.generate()
    with PrivacyLedger(tmp_path / "l.sqlite") as ledger:
        with pytest.raises(LedgerError, match="not enrolled"):
            ledger.append(_charge("a", 1, 1.0), a)
        ledger.enroll("a", a.public_key)
        with pytest.raises(LedgerError, match="not the key enrolled"):
            ledger.append(_charge("a", 1, 1.0), other)
        assert ledger.entries() == []


def test_cumulative_epsilon_may_not_decrease(tmp_path: Path) -> None:
    a = ClientSigner.generate()
    with PrivacyLedger(tmp_path / "l.sqlite") as ledger:
        ledger.enroll("a", a.public_key)
        ledger.append(_charge("a", 1, 2.0), a)
        ledger.append(_charge("a", 2, 2.0), a)  # equal is allowed (e.g. a zero-step round)
        with pytest.raises(ValueError, match="epsilon_after"):
            ledger.append(_charge("a", 3, 1.9), a)
        ledger.append(_charge("a", 1, 0.5, run_id="run-2"), a)  # a new run is a new budget
        assert len(ledger.entries()) == 3


def test_no_update_or_delete_api_and_triggers_guard_the_file(populated) -> None:
    ledger, path, _ = populated
    assert not [n for n in dir(PrivacyLedger) if n.startswith(("update", "delete", "remove", "set", "edit"))]
    con = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("UPDATE ledger_entries SET epsilon_after = 0 WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM ledger_entries WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("UPDATE client_keys SET public_key = x'00'")
    finally:
        con.close()
    assert ledger.verify().ok


def test_opening_for_writing_restores_dropped_guard_triggers(populated) -> None:
    ledger, path, _ = populated
    ledger.close()
    _tamper(path)  # drops the triggers only
    PrivacyLedger(path).close()
    con = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM ledger_entries WHERE seq = 1")
    finally:
        con.close()


def test_query_helpers(tmp_path: Path) -> None:
    a, b = ClientSigner.generate(), ClientSigner.generate()
    with PrivacyLedger(tmp_path / "l.sqlite") as ledger:
        ledger.enroll("b", b.public_key)
        ledger.enroll("a", a.public_key)
        ledger.append(_charge("a", 1, 1.0, run_id="run-2"), a)
        ledger.append(_charge("b", 1, 1.5, run_id="run-2"), b)
        ledger.append(_charge("a", 2, 2.25, run_id="run-2"), a)
        ledger.append(_charge("a", 1, 0.75, run_id="run-1"), a)
        ledger.append(_charge("a", 1, 9.0, run_id="run-1", unit="client", accountant="rdp"), a)

        assert ledger.runs() == ["run-2", "run-1"]
        assert ledger.clients() == ["a", "b"]
        assert [e.seq for e in ledger.entries(client_id="a")] == [1, 3, 4, 5]
        assert [e.seq for e in ledger.entries(run_id="run-2", client_id="a")] == [1, 3]
        assert ledger.latest_epsilon("a", run_id="run-2") == 2.25
        assert ledger.latest_epsilon("a") == 0.75
        assert ledger.latest_epsilon("a", run_id="run-1", unit="client") == 9.0
        assert ledger.latest_epsilon("b", run_id="run-1") == 0.0
        assert ledger.latest_epsilon("nobody") == 0.0


# -- verification and tampering ----------------------------------------------------------


def test_untouched_ledger_verifies(populated) -> None:
    ledger, _, _ = populated
    report = ledger.verify()
    assert report == VerificationReport(ok=True, entries_checked=6, first_bad=None)
    head = ledger.head()
    assert head is not None and head.seq == 6
    assert ledger.verify(expected_heads=[head]).ok


def test_changed_epsilon_is_named(populated) -> None:
    ledger, path, _ = populated
    _tamper(path, ("UPDATE ledger_entries SET epsilon_after = 0.01 WHERE seq = 3", ()))
    report = ledger.verify()
    assert not report.ok and report.entries_checked == 2
    bad = report.first_bad
    assert (bad.seq, bad.client_id, bad.round) == (3, "a", 2)
    assert bad.reason == "hash mismatch: content changed"


def test_changed_field_to_an_invalid_value_is_named(populated) -> None:
    ledger, path, _ = populated
    _tamper(path, ("UPDATE ledger_entries SET delta = 2.0 WHERE seq = 5", ()))
    bad = ledger.verify().first_bad
    assert (bad.seq, bad.client_id) == (5, "a")
    assert bad.reason.startswith("hash mismatch: content changed")


def test_deleted_row_is_named(populated) -> None:
    ledger, path, _ = populated
    _tamper(path, ("DELETE FROM ledger_entries WHERE seq = 3", ()))
    report = ledger.verify()
    assert not report.ok and report.entries_checked == 2
    assert report.first_bad.seq == 3
    assert report.first_bad.reason == "sequence gap: entry 3 missing"


def test_deleted_first_row_is_named(populated) -> None:
    ledger, path, _ = populated
    _tamper(path, ("DELETE FROM ledger_entries WHERE seq = 1", ()))
    bad = ledger.verify().first_bad
    assert (bad.seq, bad.reason) == (1, "sequence gap: entry 1 missing")


def test_truncated_tail_is_caught_against_a_recorded_head(populated) -> None:
    ledger, path, _ = populated
    head = ledger.head()
    _tamper(path, ("DELETE FROM ledger_entries WHERE seq = 6", ()))
    # A hash chain alone cannot see that its last entries were cut off (Crosby & Wallach
    # 2009); a head recorded earlier can.
    assert ledger.verify().ok
    report = ledger.verify(expected_heads=[head])
    assert not report.ok
    assert report.first_bad.seq == 6 and report.first_bad.reason.startswith("sequence gap: entry 6 missing")


def _swap_content(path: Path, seq_x: int, seq_y: int) -> None:
    row_x, row_y = _row(path, seq_x), _row(path, seq_y)
    columns = [c for c in row_x if c not in ("position", "seq")]
    assignment = ", ".join(f"{c} = ?" for c in columns)
    _tamper(
        path,  # park x's client_seq first so the unique constraints hold at every step
        ("UPDATE ledger_entries SET client_seq = -1 WHERE seq = ?", (seq_x,)),
        (f"UPDATE ledger_entries SET {assignment} WHERE seq = ?", (*[row_x[c] for c in columns], seq_y)),
        (f"UPDATE ledger_entries SET {assignment} WHERE seq = ?", (*[row_y[c] for c in columns], seq_x)),
    )


def test_rows_with_swapped_content_are_named(populated) -> None:
    ledger, path, _ = populated
    _swap_content(path, 2, 5)  # every column but seq (and the row's position)
    report = ledger.verify()
    assert not report.ok and report.entries_checked == 1
    bad = report.first_bad
    assert bad.seq == 2 and (bad.client_id, bad.round) == ("a", 3)  # entry 5's content at seq 2
    assert bad.reason.startswith("order: entry out of sequence")


def test_rows_with_swapped_seq_values_are_named(populated) -> None:
    ledger, path, _ = populated
    _tamper(
        path,
        ("UPDATE ledger_entries SET seq = -1 WHERE seq = 2", ()),
        ("UPDATE ledger_entries SET seq = 2 WHERE seq = 5", ()),
        ("UPDATE ledger_entries SET seq = 5 WHERE seq = -1", ()),
    )
    report = ledger.verify()
    assert not report.ok and report.entries_checked == 1
    bad = report.first_bad
    assert (bad.seq, bad.client_id, bad.round) == (5, "b", 1)
    assert bad.reason == "order: entry out of sequence (expected entry 2, found entry 5)"


def test_signature_from_another_key_is_named(populated) -> None:
    ledger, path, _ = populated
    forger = ClientSigner.generate()
    forged = forger.sign(signing_message(str(_row(path, 4)["entry_hash"])))
    _tamper(path, ("UPDATE ledger_entries SET signature = ? WHERE seq = 4", (forged,)))
    bad = ledger.verify().first_bad
    assert (bad.seq, bad.client_id, bad.round, bad.reason) == (4, "b", 2, "signature invalid")


def test_entry_resigned_with_a_different_key_is_named(populated) -> None:
    ledger, path, _ = populated
    forger = ClientSigner.generate()
    entry = ledger.entries()[-1]  # the last one, so no later link breaks
    chain = dict(
        ledger_id=entry.ledger_id, seq=entry.seq, prev_hash=entry.prev_hash,
        client_seq=entry.client_seq, client_prev_hash=entry.client_prev_hash,
        signer_key_id=forger.public_key_id,
    )
    lowered = dataclasses.replace(entry.charge, epsilon_after=0.01)
    new_hash = compute_entry_hash(lowered, **chain)
    _tamper(
        path,
        (
            "UPDATE ledger_entries SET epsilon_after = ?, signer_key_id = ?, entry_hash = ?, signature = ? "
            "WHERE seq = ?",
            (0.01, forger.public_key_id, new_hash, forger.sign(signing_message(new_hash)), entry.seq),
        ),
    )
    bad = ledger.verify().first_bad
    assert (bad.seq, bad.client_id) == (6, "b")
    assert bad.reason.startswith("unknown signer")


def test_replaced_registry_key_is_caught_with_out_of_band_keys(tmp_path: Path) -> None:
    path = tmp_path / "client-local.sqlite"
    real, forger = ClientSigner.generate(), ClientSigner.generate()
    with PrivacyLedger(path) as ledger:
        ledger.enroll("a", real.public_key)
        entry = ledger.append(_charge("a", 1, 3.0), real)
        chain = dict(
            ledger_id=entry.ledger_id, seq=1, prev_hash=GENESIS_HASH, client_seq=1,
            client_prev_hash=GENESIS_HASH, signer_key_id=forger.public_key_id,
        )
        new_hash = compute_entry_hash(dataclasses.replace(entry.charge, epsilon_after=0.1), **chain)
        _tamper(
            path,
            ("UPDATE client_keys SET public_key = ?, key_id = ?", (forger.public_key_bytes, forger.public_key_id)),
            (
                "UPDATE ledger_entries SET epsilon_after = 0.1, signer_key_id = ?, entry_hash = ?, signature = ?",
                (forger.public_key_id, new_hash, forger.sign(signing_message(new_hash))),
            ),
        )
        # The registry in the file is only as trustworthy as the file; keys kept out of band are not.
        bad = ledger.verify(trusted_keys={"a": real.public_key}).first_bad
        assert (bad.seq, bad.client_id) == (1, "a")
        assert bad.reason.startswith("unknown signer")


def test_inserted_row_with_valid_hash_but_no_valid_signature_is_named(populated) -> None:
    ledger, path, _ = populated
    last_a = ledger.entries(client_id="a")[-1]
    head = ledger.head()
    charge = _charge("a", 4, 0.0)
    chain = dict(
        ledger_id=head.ledger_id, seq=7, prev_hash=head.entry_hash,
        client_seq=4, client_prev_hash=last_a.entry_hash, signer_key_id=last_a.signer_key_id,
    )
    forged_hash = compute_entry_hash(charge, **chain)
    row = charge.to_dict() | chain | {"entry_hash": forged_hash, "signature": os.urandom(64)}
    columns = ", ".join(row)
    _tamper(path, (f"INSERT INTO ledger_entries ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())))
    report = ledger.verify()
    assert not report.ok and report.entries_checked == 6
    assert (report.first_bad.seq, report.first_bad.client_id, report.first_bad.reason) == (7, "a", "signature invalid")


def test_inserted_row_from_an_unenrolled_client_is_named(populated) -> None:
    ledger, path, _ = populated
    mallory = ClientSigner.generate()
    head = ledger.head()
    charge = _charge("mallory", 1, 0.0)
    chain = dict(
        ledger_id=head.ledger_id, seq=7, prev_hash=head.entry_hash, client_seq=1,
        client_prev_hash=GENESIS_HASH, signer_key_id=mallory.public_key_id,
    )
    forged_hash = compute_entry_hash(charge, **chain)
    row = charge.to_dict() | chain | {"entry_hash": forged_hash, "signature": mallory.sign(signing_message(forged_hash))}
    _tamper(path, (f"INSERT INTO ledger_entries ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())))
    bad = ledger.verify().first_bad
    assert (bad.seq, bad.client_id) == (7, "mallory") and bad.reason.startswith("unknown signer")


# -- client-local ledgers and a merged copy -------------------------------------------------


def test_merged_copy_of_client_local_ledgers_detects_a_dropped_charge(tmp_path: Path) -> None:
    signers = {"a": ClientSigner.generate(), "b": ClientSigner.generate()}
    local = {}
    for client, signer in signers.items():
        local[client] = PrivacyLedger(tmp_path / f"client-{client}.sqlite")
        local[client].enroll(client, signer.public_key)
        for round in (1, 2, 3):
            local[client].append(_charge(client, round, float(round)), signer)
    merged_path = tmp_path / "coordinator.sqlite"
    with PrivacyLedger(merged_path) as merged:
        assert merged.merge_from(local["a"]) == 3
        assert merged.merge_from(local["b"]) == 3
        assert merged.merge_from(local["a"]) == 0  # idempotent
        local["a"].append(_charge("a", 4, 4.0), signers["a"])
        assert merged.merge_from(local["a"]) == 1
        assert merged.verify() == VerificationReport(ok=True, entries_checked=7)
        assert merged.latest_epsilon("a") == 4.0

        # An entry that was altered in transit is refused, and nothing is written.
        shipped = local["b"].entries()
        local["b"].append(_charge("b", 4, 4.0), signers["b"])
        altered = local["b"].entries()[-1]
        altered = dataclasses.replace(altered, charge=dataclasses.replace(altered.charge, epsilon_after=0.5))
        with pytest.raises(LedgerError, match="hash mismatch"):
            merged.import_entries([*shipped, altered])
        assert len(merged.entries()) == 7

        # Dropping one of a's charges from the merged copy is named, client included.
        _tamper(merged_path, ("DELETE FROM ledger_entries WHERE ledger_id = ? AND seq = 2", (local["a"].ledger_id,)))
        bad = merged.verify().first_bad
        assert (bad.seq, bad.client_id, bad.ledger_id) == (2, "a", local["a"].ledger_id)
        assert bad.reason == "sequence gap: entry 2 missing"
    for ledger in local.values():
        ledger.close()


def test_import_continues_the_stored_chains_and_verifies_only_what_it_adds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import privacy.ledger.verify as verify_module

    signer = ClientSigner.generate()
    local = PrivacyLedger(tmp_path / "client-a.sqlite")
    local.enroll("a", signer.public_key)
    for round in (1, 2, 3):
        local.append(_charge("a", round, float(round)), signer)
    merged_path = tmp_path / "coordinator.sqlite"
    with PrivacyLedger(merged_path) as merged:
        merged.enroll("a", signer.public_key)
        assert merged.import_entries(local.entries()) == 3

        # A round's import checks one signature, the new entry's, however long the chain.
        checked: list[bytes] = []
        verify_signature = verify_module.verify_signature
        monkeypatch.setattr(verify_module, "verify_signature",
                            lambda key, sig, message: checked.append(sig) or verify_signature(key, sig, message))
        local.append(_charge("a", 4, 4.0), signer)
        assert merged.import_entries(local.entries()) == 1
        assert checked == [local.entries()[-1].signature]

        # A new entry must continue the stored chain: skipping one is a gap.
        local.append(_charge("a", 5, 5.0), signer)
        local.append(_charge("a", 6, 6.0), signer)
        with pytest.raises(LedgerError, match="sequence gap: entry 5 missing"):
            merged.import_entries(local.entries()[-1:])

        # The stored head is what the next entry must link to: a rewritten head breaks it.
        _tamper(merged_path, ("UPDATE ledger_entries SET entry_hash = ? WHERE seq = 4",
                              ("0" * 64,)))
        with pytest.raises(LedgerError, match="chain broken"):
            merged.import_entries(local.entries()[-2:])
        assert len(merged.entries()) == 4
        assert not merged.verify().ok
    local.close()


def test_import_groups_refuses_a_bad_group_alone_and_writes_the_rest_in_one_statement(
    tmp_path: Path,
) -> None:
    signers, local, shipped = _client_ledgers(tmp_path, "abcd")
    with PrivacyLedger(tmp_path / "coordinator.sqlite") as merged:
        for client in "abcd":
            merged.enroll(client, signers[client].public_key)
        assert merged.import_groups({"a": shipped["a"][:1]}) == {"a": 1}

        first, second = shipped["c"]
        forged = dataclasses.replace(second, charge=dataclasses.replace(second.charge, epsilon_after=0.5))
        other_ledger = dataclasses.replace(shipped["d"][0], ledger_id=shipped["a"][0].ledger_id)
        with _statements(merged) as statements:
            outcomes = merged.import_groups({
                "a": shipped["a"],            # its first entry is stored: one more
                "b": shipped["b"],
                "c": [first, forged],         # altered in transit
                "d": [other_ledger],          # claims a place in a's ledger
                "none": [],
            })
        assert (outcomes["a"], outcomes["b"], outcomes["none"]) == (1, 2, 0)
        assert isinstance(outcomes["c"], LedgerError) and "hash mismatch" in str(outcomes["c"])
        assert isinstance(outcomes["d"], LedgerError) and "conflict" in str(outcomes["d"])
        assert statements.count("INSERT") == 1  # every accepted entry in one statement
        assert sorted(e.charge.client_id for e in merged.entries()) == ["a", "a", "b", "b"]
        assert merged.verify().ok

        # A later round continues from what the groups left, and nothing is imported twice.
        assert merged.import_groups({"c": shipped["c"], "b": shipped["b"]}) == {"c": 2, "b": 0}
        assert len(merged.entries()) == 6 and merged.verify().ok
    for ledger in local.values():
        ledger.close()


def test_a_batch_commits_once_and_rolls_back_only_the_write_that_failed(tmp_path: Path) -> None:
    signers, local, shipped = _client_ledgers(tmp_path, "abc")
    merged_path = tmp_path / "coordinator.sqlite"
    with PrivacyLedger(merged_path) as merged:
        engine = merged._database.engine  # white-box: the process's engine for ledger files
        commits: list[object] = []
        elsewhere = [False]  # another ledger's connections commit too

        def count(conn: object) -> None:
            if not elsewhere[0]:
                commits.append(conn)

        event.listen(engine, "commit", count)
        try:
            with merged.batch():
                for client in "ab":
                    merged.enroll(client, signers[client].public_key)
                    assert merged.import_entries(shipped[client]) == 2
                merged.enroll("c", signers["c"].public_key)
                first, second = shipped["c"]
                altered = dataclasses.replace(second, charge=dataclasses.replace(second.charge, epsilon_after=0.5))
                with pytest.raises(LedgerError, match="hash mismatch"):
                    merged.import_entries([first, altered])
                assert merged.latest_epsilon("a") == 2.0  # reads inside see the batch
                assert commits == []
                elsewhere[0] = True
                with PrivacyLedger(merged_path, read_only=True) as outside:
                    assert outside.entries() == [] and outside.clients() == []  # not yet committed
                elsewhere[0] = False
        finally:
            event.remove(engine, "commit", count)
        assert len(commits) == 1
        with PrivacyLedger(merged_path, read_only=True) as outside:
            assert sorted(outside.clients()) == ["a", "b", "c"] and len(outside.entries()) == 4
            assert outside.verify().ok

        # An error that leaves the batch takes every write of the batch with it.
        with pytest.raises(RuntimeError, match="crash"):
            with merged.batch():
                assert merged.import_entries([first, second]) == 2
                raise RuntimeError("crash")
        assert len(merged.entries()) == 4
        with merged.batch(), pytest.raises(LedgerError, match="already open"):
            with merged.batch():
                pass
    for ledger in local.values():
        ledger.close()


# -- key files ---------------------------------------------------------------------------------


def test_key_file_is_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "client-a.pem"
    old_umask = os.umask(0)  # even a permissive umask must not widen the key file
    try:
        signer = ClientSigner.create(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    assert content.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    with pytest.raises(FileExistsError):
        ClientSigner.create(path)
    assert path.read_bytes() == content
    assert ClientSigner.load_or_create(path).public_key_id == signer.public_key_id
    assert ClientSigner.load(path).public_key_id == signer.public_key_id
    assert path.read_bytes() == content
    assert [p.name for p in path.parent.iterdir()] == ["client-a.pem"]  # no temporary left behind


def test_key_file_readable_by_others_or_of_another_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "client-a.pem"
    ClientSigner.create(path)
    path.chmod(0o644)
    with pytest.raises(LedgerError, match="mode 0644"):
        ClientSigner.load(path)

    ec_path = tmp_path / "ec.pem"
    ec_path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ec_path.chmod(0o600)
    with pytest.raises(LedgerError, match="Ed25519"):
        ClientSigner.load(ec_path)


def test_key_file_with_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "client-a.pem"
    signer = ClientSigner.create(path, passphrase=b"correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    assert ClientSigner.load(path, passphrase=b"correct horse").public_key_id == signer.public_key_id
    with pytest.raises(LedgerError):
        ClientSigner.load(path)
    assert isinstance(ClientSigner(Ed25519PrivateKey.generate()).sign(b"x"), bytes)


# -- several processes, and crashes --------------------------------------------------------------


def _append_worker(path: str, key_path: str, client_id: str, count: int, start, halfway) -> None:
    signer = ClientSigner.load(key_path)
    with PrivacyLedger(path, create=False) as ledger:
        start.wait(30)  # a barrier: both processes have opened the ledger before either appends
        for round in range(1, count + 1):
            ledger.append(_charge(client_id, round, 0.1 * round), signer)
            time.sleep(0.002)  # "training": without it one process can hold the lock throughout
            if round == count // 2:
                # Both halves hold both writers, so the chain interleaves them at least
                # twice however the scheduler orders the processes.
                halfway.wait(60)


def test_concurrent_appends_from_two_processes_keep_one_linear_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    count = 30
    with PrivacyLedger(path) as ledger:
        for client in ("p0", "p1"):
            ledger.enroll(client, ClientSigner.create(tmp_path / f"{client}.pem").public_key)
    start, halfway = SPAWN.Barrier(2), SPAWN.Barrier(2)
    workers = [
        SPAWN.Process(target=_append_worker,
                      args=(str(path), str(tmp_path / f"{c}.pem"), c, count, start, halfway))
        for c in ("p0", "p1")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0

    with PrivacyLedger(path, create=False) as ledger:
        assert ledger.verify() == VerificationReport(ok=True, entries_checked=2 * count)
        entries = ledger.entries()
        assert [e.seq for e in entries] == list(range(1, 2 * count + 1))
        writers = [e.charge.client_id for e in entries]
        assert sum(x != y for x, y in zip(writers, writers[1:])) >= 2, "the appends did not overlap"
        for client in ("p0", "p1"):
            assert [e.client_seq for e in entries if e.charge.client_id == client] == list(range(1, count + 1))
            assert ledger.latest_epsilon(client) == pytest.approx(0.1 * count)


def _append_then_hang(path: str, key_path: str, conn) -> None:
    signer = ClientSigner.load(key_path)
    ledger = PrivacyLedger(path, create=False)
    entry = ledger.append(_charge("c0", 1, 0.8125), signer)
    conn.send(entry.to_dict())
    time.sleep(120)  # killed here: no close, no checkpoint, no clean exit


def _append_forever(path: str, key_path: str, conn) -> None:
    signer = ClientSigner.load(key_path)
    ledger = PrivacyLedger(path, create=False)
    for round in range(1, 100_000):
        entry = ledger.append(_charge("c0", round, 0.01 * round), signer)
        conn.send(entry.seq)


def _enrolled_ledger_file(tmp_path: Path) -> tuple[Path, Path]:
    path, key_path = tmp_path / "client.sqlite", tmp_path / "c0.pem"
    with PrivacyLedger(path) as ledger:
        ledger.enroll("c0", ClientSigner.create(key_path).public_key)
    return path, key_path


def test_charge_survives_sigkill_right_after_append(tmp_path: Path) -> None:
    path, key_path = _enrolled_ledger_file(tmp_path)
    receiver, sender = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(target=_append_then_hang, args=(str(path), str(key_path), sender))
    child.start()
    assert receiver.poll(30), "child did not append"
    acknowledged = LedgerEntry.from_dict(receiver.recv())
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    assert Path(f"{path}-wal").exists()  # the charge sits in the un-checkpointed WAL

    with PrivacyLedger(path, create=False) as reopened:
        assert reopened.entries() == [acknowledged]
        assert reopened.verify() == VerificationReport(ok=True, entries_checked=1)
        assert reopened.latest_epsilon("c0") == 0.8125


def test_sigkill_during_appends_loses_no_acknowledged_charge(tmp_path: Path) -> None:
    path, key_path = _enrolled_ledger_file(tmp_path)
    receiver, sender = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(target=_append_forever, args=(str(path), str(key_path), sender))
    child.start()
    acknowledged = 0
    while acknowledged < 15:
        assert receiver.poll(30), "child stopped appending"
        acknowledged = receiver.recv()
    os.kill(child.pid, signal.SIGKILL)  # most likely in the middle of the next append
    child.join(10)

    with PrivacyLedger(path, create=False) as reopened:
        report = reopened.verify()
        assert report.ok
        assert report.entries_checked >= acknowledged
        assert reopened.head().seq == report.entries_checked
