"""The coordinator's merged copy: it takes the clients' signed entries, and refuses forgeries."""

from __future__ import annotations

import json
from pathlib import Path

from client.ledger_charge import ClientLedger
from privacy.ledger import PrivacyLedger
from server.ledger_merge import CoordinatorLedger
from server.workflow import ClientReport
from task.config import resolve_config
from tests.client.test_ledger_charge import trained_outcome


def client_ledger(tmp_path: Path, client_id: str) -> ClientLedger:
    config = resolve_config({"num-server-rounds": 3, "target-epsilon": 2.0, "delta": 1e-3})
    return ClientLedger.open({"ledger-dir": str(tmp_path / client_id)}, config, client_id, {"run-id": "run-a"})


def report(ledger: ClientLedger, fields: dict | None = None) -> ClientReport:
    return ClientReport(1, ledger.client_id, "trained", 0.9, ledger=fields or ledger.reply_fields())


def test_entries_from_every_round_and_client_are_merged_and_verify(tmp_path: Path):
    coordinator = CoordinatorLedger(tmp_path)
    clients = [client_ledger(tmp_path, f"client-{i}") for i in range(2)]
    for server_round in (1, 2):
        for ledger in clients:
            ledger.charge(trained_outcome(0.5 * server_round), server_round)
            coordinator.receive([report(ledger)], server_round)
    described = coordinator.describe()
    assert described["problems"] == [] and described["merged"] == "ledger.sqlite"
    assert {c: h["seq"] for c, h in described["heads"].items()} == {"client-0": 2, "client-1": 2}
    assert described["budgets"]["client-0"]["epsilon"] == 2.0
    with PrivacyLedger(tmp_path / "ledger.sqlite", read_only=True) as merged:
        assert merged.verify().ok and len(merged.entries()) == 4


def test_a_forged_entry_is_refused_and_recorded(tmp_path: Path):
    coordinator = CoordinatorLedger(tmp_path)
    ledger = client_ledger(tmp_path, "client-0")
    ledger.charge(trained_outcome(), 1)
    fields = ledger.reply_fields()
    entry = json.loads(fields["entries"][0])
    entry["charge"]["epsilon_after"] = 0.1  # under-report, keeping the old signature
    coordinator.receive([report(ledger, {**fields, "entries": [json.dumps(entry)]})], 1)
    (problem,) = coordinator.describe()["problems"]
    assert problem.startswith("round 1: ledger of client-0 not merged: refusing to import")
    assert "hash mismatch" in problem and "client-0" not in coordinator.heads


def test_entries_of_another_client_and_a_false_head_are_refused(tmp_path: Path):
    coordinator = CoordinatorLedger(tmp_path)
    zero, one = client_ledger(tmp_path, "client-0"), client_ledger(tmp_path, "client-1")
    zero.charge(trained_outcome(), 1)
    one.charge(trained_outcome(), 1)
    coordinator.receive([report(one, {**one.reply_fields(), "entries": zero.reply_fields()["entries"]})], 1)
    coordinator.receive([report(zero, {**zero.reply_fields(), "head-seq": 5})], 1)
    problems = coordinator.describe()["problems"]
    assert "entries of other clients: ['client-0']" in problems[0]
    assert "reported head (entry 5) is not among its entries" in problems[1]


def test_an_unreadable_merged_ledger_is_a_recorded_problem_not_a_crash(tmp_path):
    ledger = client_ledger(tmp_path, "client-0")
    ledger.charge(trained_outcome(0.5), 1)
    (tmp_path / "ledger.sqlite").write_bytes(b"this is not a SQLite database" * 100)
    coordinator = CoordinatorLedger(tmp_path)
    coordinator.receive([report(ledger)], 1)
    assert len(coordinator.problems) == 1
    assert "client-0" in coordinator.problems[0] and "not merged" in coordinator.problems[0]


def test_a_client_returning_with_another_key_is_refused(tmp_path: Path):
    coordinator = CoordinatorLedger(tmp_path)
    original = client_ledger(tmp_path, "client-0")
    original.charge(trained_outcome(0.5), 1)
    coordinator.receive([report(original)], 1)
    impostor = client_ledger(tmp_path / "elsewhere", "client-0")  # same name, new key
    impostor.charge(trained_outcome(0.5), 2)
    coordinator.receive([report(impostor)], 2)
    (problem,) = coordinator.describe()["problems"]
    assert problem.startswith("round 2: ledger of client-0 not merged")
    assert "re-enrolling a different key is not allowed" in problem
    assert coordinator.heads["client-0"]["seq"] == 1


def test_a_client_ships_only_the_entries_the_merged_copy_lacks(tmp_path: Path):
    coordinator = CoordinatorLedger(tmp_path)
    ledger = client_ledger(tmp_path, "client-0")
    assert coordinator.held("client-0") == {}  # first contact: the whole ledger
    ledger.charge(trained_outcome(0.3), 1)
    ledger.charge(trained_outcome(0.6), 2)
    shipped = []
    for server_round in (3, 4, 5):
        ledger.charge(trained_outcome(0.2 * server_round), server_round)
        fields = ledger.reply_fields(coordinator.held("client-0"))
        shipped.append([json.loads(text)["seq"] for text in fields["entries"]])
        if server_round != 4:  # round 4's merge is lost: round 5 sends its entry again
            coordinator.receive([report(ledger, fields)], server_round)
    assert shipped == [[1, 2, 3], [4], [4, 5]]
    assert coordinator.describe()["problems"] == []
    with PrivacyLedger(tmp_path / "ledger.sqlite", read_only=True) as merged:
        assert merged.verify().ok and [e.seq for e in merged.entries()] == [1, 2, 3, 4, 5]


def test_a_held_head_of_another_ledger_or_malformed_gets_every_entry(tmp_path: Path):
    ledger = client_ledger(tmp_path, "client-0")
    for server_round in (1, 2):
        ledger.charge(trained_outcome(0.5 * server_round), server_round)
    own = ledger.reply_fields()["ledger-id"]
    for held in ({"ledger-held-id": "0" * 32, "ledger-held-seq": 1},
                 {"ledger-held-id": own, "ledger-held-seq": "1"},
                 {"ledger-held-id": own}):
        assert len(ledger.reply_fields(held)["entries"]) == 2
    assert len(ledger.reply_fields({"ledger-held-id": own, "ledger-held-seq": 1})["entries"]) == 1
