"""A client's own ledger: budgets, signed charges on disk, and resuming after a restart."""

from __future__ import annotations

import json
import logging
import math
import stat
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting.pld import PLDAccountant

from client.ledger_charge import ClientLedger, ledger_directory, resolve_budget
from client.local_round import LocalRoundOutcome, run_local_round
from privacy.accounting import DPStep, compute_epsilon
from privacy.ledger import LedgerEntry, PrivacyLedger
from task.config import ConfigError, resolve_config
from tests.client.test_local_round import global_weights, synthetic_client

CONFIG = {"num-server-rounds": 3, "batch-size": 20, "target-epsilon": 2.0, "delta": 1e-3}


def open_ledger(tmp_path: Path, node_config: dict | None = None, overrides: dict | None = None) -> ClientLedger:
    config = resolve_config({**CONFIG, **(overrides or {})})
    node = {"ledger-dir": str(tmp_path / "ledger"), **(node_config or {})}
    return ClientLedger.open(node, config, "client-7", {"run-id": "run-a", "server-round": 1})


def train_round(ledger: ClientLedger, server_round: int) -> LocalRoundOutcome:
    """What client/app.py does: history from the ledger, train, charge before replying."""
    outcome = run_local_round(
        synthetic_client(), global_weights(), ledger.config, server_round,
        history=ledger.history(), budget=ledger.budget.epsilon,
    )
    ledger.charge(outcome, server_round)
    return outcome


def trained_outcome(epsilon: float = 0.9) -> LocalRoundOutcome:
    """The outcome of a round that trained, as run_local_round reports it (no training)."""
    return LocalRoundOutcome(history=[], metrics={
        "num-examples": 100, "noise-multiplier": 1.2, "sample-rate": 0.2, "delta": 1e-3,
        "max-grad-norm": 1.0, "epsilon": epsilon, "steps": 5})


def test_budget_comes_from_the_node_then_the_run_then_the_target():
    config = resolve_config({**CONFIG, "client-budgets": "client-7=1.5"})
    node = resolve_budget({"epsilon-budget": 0.7, "delta": 1e-6}, config, "client-7")
    assert (node.epsilon, node.delta, node.source) == (0.7, 1e-6, "node config")
    run = resolve_budget({}, config, "client-7")
    assert (run.epsilon, run.delta, run.source) == (1.5, 1e-3, "run config client-budgets")
    target = resolve_budget({}, config, "client-8")
    assert (target.epsilon, target.source) == (2.0, "run target-epsilon")
    fixed = resolve_budget({}, resolve_config({**CONFIG, "noise-multiplier": 1.0}), "client-8")
    assert math.isinf(fixed.epsilon) and "epsilon-budget" not in fixed.to_record()


@pytest.mark.parametrize(
    ("node_config", "message"),
    [
        ({"epsilon-budget": "lots"}, "node config 'epsilon-budget' of client-7 must be a number, got 'lots'"),
        ({"epsilon-budget": -1.0}, "node config 'epsilon-budget' of client-7 must be > 0, got -1"),
        ({"delta": 2.0}, "node config 'delta' of client-7 must be in (0, 1), got 2"),
        ({"ledger-dir": ""}, "node config 'ledger-dir' must be a folder path"),
    ],
)
def test_bad_node_config_is_named(tmp_path: Path, node_config: dict, message: str):
    with pytest.raises(ConfigError) as error:
        open_ledger(tmp_path, node_config)
    assert message in str(error.value)


def test_ledger_folder_is_the_nodes_then_the_runs_then_the_results_dir(tmp_path: Path):
    config = resolve_config({**CONFIG, "out-dir": str(tmp_path / "runs")})
    assert ledger_directory({"ledger-dir": "/data/ledger"}, config, "r1") == Path("/data/ledger")
    assert ledger_directory({}, resolve_config({**CONFIG, "ledger-dir": "/srv/l"}), "r1") == Path("/srv/l")
    assert ledger_directory({}, config, "r1") == tmp_path / "runs" / "r1" / "ledgers"


def test_charges_are_signed_on_disk_and_a_restarted_client_resumes(tmp_path: Path):
    fixed_noise = {"noise-multiplier": 1.3}  # no calibration: the test is about the ledger
    first = train_round(open_ledger(tmp_path, overrides=fixed_noise), 1)
    key = tmp_path / "ledger" / "client-7.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    restarted = open_ledger(tmp_path, overrides=fixed_noise)  # a new process: only the files on disk
    steps = int(first.metrics["steps"])
    sigma, q = first.metrics["noise-multiplier"], first.metrics["sample-rate"]
    assert restarted.history() == [DPStep(sigma, q, steps)]
    second = train_round(restarted, 2)
    assert second.metrics["epsilon"] == compute_epsilon([DPStep(sigma, q, 2 * steps)], 1e-3, "prv")

    with PrivacyLedger(tmp_path / "ledger" / "client-7.sqlite", read_only=True) as ledger:
        assert ledger.verify().ok
        entries = ledger.entries()
    assert [(e.charge.round, e.charge.epsilon_after) for e in entries] == [
        (1, first.metrics["epsilon"]), (2, second.metrics["epsilon"])]
    charge = entries[1].charge
    assert (charge.run_id, charge.client_id, charge.unit, charge.mechanism, charge.accountant) == (
        "run-a", "client-7", "sample", "subsampled_gaussian", "prv")
    assert (charge.steps, charge.clipping_norm, charge.dataset_size, charge.delta) == (steps, 1.0, 100, 1e-3)

    # The recorded epsilons agree with Google's dp-accounting (PLD) on the recorded events.
    logging.disable(logging.WARNING)
    try:
        for upto in range(1, len(entries) + 1):
            pld = PLDAccountant(value_discretization_interval=4e-4)
            for entry in entries[:upto]:
                c = entry.charge
                pld.compose(dp_accounting.PoissonSampledDpEvent(
                    c.sample_rate, dp_accounting.GaussianDpEvent(c.noise_multiplier)), c.steps)
            assert entries[upto - 1].charge.epsilon_after == pytest.approx(pld.get_epsilon(1e-3), rel=0.01)
    finally:
        logging.disable(logging.NOTSET)


def test_a_declined_round_is_not_charged_and_the_reply_says_so(tmp_path: Path):
    ledger = open_ledger(tmp_path, {"epsilon-budget": 0.05})
    outcome = train_round(ledger, 1)
    assert outcome.declined and "above its budget 0.05" in outcome.reason
    fields = ledger.reply_fields()
    assert fields["head-seq"] == 0 and fields["entries"] == []
    assert fields["epsilon-budget"] == 0.05 and fields["budget-source"] == "node config"


def test_reply_fields_carry_the_signed_entries_and_the_head(tmp_path: Path):
    ledger = open_ledger(tmp_path)
    ledger.charge(trained_outcome(), 1)
    fields = ledger.reply_fields()
    (entry,) = [LedgerEntry.from_dict(json.loads(text)) for text in fields["entries"]]
    assert (fields["head-seq"], fields["head-hash"]) == (entry.seq, entry.entry_hash)
    assert fields["ledger-id"] == entry.ledger_id and len(bytes.fromhex(fields["public-key"])) == 32
    pem = (tmp_path / "ledger" / "client-7.key").read_text().splitlines()[1]
    assert pem not in json.dumps(fields)  # the private key never leaves the client


def test_no_dp_means_no_ledger(tmp_path: Path):
    ledger = open_ledger(tmp_path, overrides={"dp": False})
    assert ledger.history() == [] and not (tmp_path / "ledger").exists()
    assert "ledger-id" not in ledger.reply_fields()


def test_a_new_run_on_the_same_ledger_goes_on_from_the_spend(tmp_path: Path):
    """A restarted coordinator starts a new run; the client's budget still covers what it
    spent before (its ledger folder persists), so spend survives the server's restart."""
    config = resolve_config(CONFIG)
    node = {"ledger-dir": str(tmp_path / "ledger"), "epsilon-budget": 1.0}
    before = ClientLedger.open(node, config, "client-7", {"run-id": "run-a"})
    before.charge(trained_outcome(0.9), 1)
    after = ClientLedger.open(node, config, "client-7", {"run-id": "run-b"})
    assert after.history() == [DPStep(1.2, 0.2, 5)]
    outcome = run_local_round(synthetic_client(), global_weights(), after.config, 1,
                              history=after.history(), budget=after.budget.epsilon)
    assert outcome.declined and "above its budget 1" in outcome.reason
