"""End to end, with a real Flower simulation (digits, 3 clients, secure aggregation on):
per-client budgets stop clients at the round that would cross them, the run goes on with
the others and ends cleanly, and ``fedshield ledger verify`` catches tampering with the
real SQLite ledgers, naming the entry."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

from tests.cli_runner import fedshield as run_fedshield
from privacy.ledger import PrivacyLedger
from privacy.report.model import build_report
from privacy.report.schema import report_schema
from simulations.run import simulate
from task.config import resolve_config
from tests.audit_fixtures import swap_rows, tamper

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
# sigma 2 and 14 steps a round put the clients at epsilon 0.6489, 0.8805, 1.0635, 1.2209
# after rounds 1 to 4: client-0 (budget 1) must stop before round 3, client-1 (1.1) before 4.
BUDGETS = "client-0=1.0,client-1=1.1,client-2=5"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    config = resolve_config({
        "scenario": "digits", "num-server-rounds": 5, "local-epochs": 1, "noise-multiplier": 2.0,
        "client-budgets": BUDGETS, "min-train-clients": 2,
        "out-dir": str(tmp_path_factory.mktemp("runs")),
    })
    return simulate(config, num_clients=3)


def statuses(results: Path) -> dict[str, dict[int, tuple[str, float]]]:
    rows = csv.DictReader(open(results / "client_epsilon.csv"))
    found: dict[str, dict[int, tuple[str, float]]] = {}
    for row in rows:
        found.setdefault(row["client_id"], {})[int(row["round"])] = (row["status"], float(row["epsilon"] or 0))
    return found


def fedshield(*args: str) -> subprocess.CompletedProcess:
    return run_fedshield(*args, cwd=ROOT)


def test_a_client_stops_at_the_round_that_would_cross_its_budget(run: dict):
    results = Path(run["results_dir"])
    seen = statuses(results)
    assert [seen["client-0"][r][0] for r in (1, 2, 3)] == ["trained", "trained", "declined"]
    assert 4 not in seen["client-0"]  # the server stopped sampling it
    assert [seen["client-1"][r][0] for r in (3, 4)] == ["trained", "declined"]
    assert seen["client-2"][3][0] == "trained"  # the run went on with the others

    final = run["client_epsilon"]["client-0"]["final"]
    assert 0 < final <= 1.0
    with PrivacyLedger(results / "ledgers" / "client-0.sqlite", read_only=True) as own:
        charged = [e.charge for e in own.entries()]
    assert [c.round for c in charged] == [1, 2] and charged[-1].epsilon_after == final
    assert run["ledger"]["budgets"]["client-0"] == {"epsilon": 1.0, "delta": 1e-5, "source": "run config client-budgets"}
    assert run["ledger"]["problems"] == []


def test_the_run_ends_cleanly_when_too_few_clients_have_budget(run: dict):
    assert run["rounds_completed"] == 4
    assert run["stop_reason"] == (
        "stopped before round 5: only 1 client(s) have privacy budget left, fewer than min-train-clients=2")


def test_the_report_of_the_real_run_matches_its_schema_and_ledger(run: dict):
    report = build_report(Path(run["results_dir"]))
    jsonschema.validate(report, report_schema(), cls=jsonschema.Draft202012Validator)
    assert report["ledger_integrity"]["status"] == "verified"
    clients = {c["client_id"]: c for c in report["clients"]}
    assert clients["client-0"]["within_budget"] and clients["client-0"]["declined_rounds"] == [3]
    assert report["secure_aggregation"]["enabled"] and report["secure_aggregation"]["rounds"]


@pytest.mark.parametrize(
    ("file", "attack", "expected"),
    [
        ("ledger.sqlite",
         lambda p: tamper(p, "UPDATE ledger_entries SET epsilon_after = 0.1 WHERE client_id = 'client-1' AND seq = 2"),
         "ledger.sqlite: entry 2 of client-1's ledger (round 2): hash mismatch: content changed"),
        ("ledgers/client-2.sqlite",
         lambda p: tamper(p, "DELETE FROM ledger_entries WHERE seq = 2"),
         "ledgers/client-2.sqlite: entry 2 of client-2's ledger: sequence gap: entry 2 missing"),
        ("ledger.sqlite",
         lambda p: swap_rows(p, "client-2", 1, 2),
         # Which of the two swapped rows verification meets first depends on the order the
         # clients' replies were merged in; either way it names client-2 and the reordering.
         re.compile(r"ledger\.sqlite: entry [12] of client-2's ledger \(round [12]\): "
                    r"(order: entry out of sequence|chain broken|hash mismatch)")),
        ("ledgers/client-0.sqlite",
         lambda p: tamper(p, ("UPDATE ledger_entries SET signature = ? WHERE seq = 1", (b"\x01" * 64,))),
         "ledgers/client-0.sqlite: entry 1 of client-0's ledger (round 1): signature invalid"),
    ],
    ids=["changed-epsilon", "deleted-row", "reordered-rows", "forged-signature"],
)
def test_ledger_verify_names_the_tampered_entry(run: dict, tmp_path: Path, file: str, attack, expected: str):
    original = Path(run["results_dir"])
    intact = fedshield("ledger", "verify", str(original))
    assert intact.returncode == 0 and intact.stdout.startswith("intact: "), intact.stderr

    copy = Path(shutil.copytree(original, tmp_path / original.name))
    attack(copy / file)
    result = fedshield("ledger", "verify", original.name, "--runs-dir", str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0] == f"error: run '{original.name}': ledger NOT intact: " + lines[0].split("NOT intact: ")[1]
    if isinstance(expected, re.Pattern):
        assert expected.search(lines[0]), lines[0]
    else:
        assert expected in lines[0], lines[0]


def test_ledger_verify_names_a_missing_run(tmp_path: Path):
    result = fedshield("ledger", "verify", "no-such-run", "--runs-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: run 'no-such-run' not found: neither a results directory nor a run id under {tmp_path}"
