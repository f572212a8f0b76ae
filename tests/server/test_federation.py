"""The coordinator's loop around a workflow: when a round's ledger entries are committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.ledger_charge import ClientLedger
from privacy.ledger import PrivacyLedger
from server.federation import run_federation
from server.workflow import ClientReport, PlainWorkflow, RoundAggregate
from task.config import RunConfig, resolve_config
from tests.client.test_ledger_charge import trained_outcome
from tests.inprocess_grid import InProcessGrid


class ChargingWorkflow(PlainWorkflow):
    """Stands in for the Message rounds (the grid only names the nodes): each sampled
    client charges its real, signed ledger and reports it; the training reports go to
    ``next_cohort`` as soon as they are in, as the secure workflow sends them before its
    unmask stage, then the rest of the round runs ``after_reports`` (which may fail, as a
    lost link would)."""

    def __init__(self, ledger_dir: Path, config: RunConfig, after_reports=None) -> None:
        self._ledger_dir, self._config = ledger_dir, config
        self._after_reports = after_reports or (lambda server_round: None)

    def run_round(self, grid, node_ids, arrays, config, server_round, timeout=None,
                  per_node=None, next_cohort=None) -> RoundAggregate:
        reports = []
        for node in node_ids:
            client_id = f"client-{node}"
            ledger = ClientLedger.open({"ledger-dir": str(self._ledger_dir / client_id)},
                                       self._config, client_id, config)
            with ledger:
                ledger.charge(trained_outcome(0.3 * server_round), server_round)
                fields = ledger.reply_fields({**config, **(per_node or {}).get(node, {})})
            reports.append(ClientReport(node, client_id, "trained", 0.3 * server_round,
                                        public={"steps": 5.0}, ledger=fields))
        next_cohort(reports)
        self._after_reports(server_round)
        update = {name: np.zeros_like(a.numpy()) for name, a in arrays.items()}
        return RoundAggregate(update, float(len(reports)), {}, reports)


def merged_rounds(results_dir: Path) -> list[int]:
    """The rounds of the entries in the coordinator's merged ledger, sorted."""
    with PrivacyLedger(results_dir / "ledger.sqlite", read_only=True) as merged:
        return sorted(entry.charge.round for entry in merged.entries())


@pytest.fixture
def config(tmp_path: Path) -> RunConfig:
    return resolve_config({"scenario": "digits", "num-server-rounds": 3,
                           "target-epsilon": 5.0, "delta": 1e-3,
                           "out-dir": str(tmp_path / "runs")})


def test_each_round_is_recorded_only_once_its_ledger_entries_are_committed(tmp_path, config):
    merged_at_record: list[list[int]] = []
    results = tmp_path / "runs"

    def on_round(record) -> None:
        (run_dir,) = results.iterdir()
        merged_at_record.append(merged_rounds(run_dir))

    summary = run_federation(InProcessGrid(3), config, ChargingWorkflow(tmp_path / "nodes", config),
                             on_round=on_round, node_wait_timeout=5)
    assert merged_at_record == [[1] * 3, [1] * 3 + [2] * 3, [1] * 3 + [2] * 3 + [3] * 3]
    assert summary["ledger"]["problems"] == []
    assert {h["seq"] for h in summary["ledger"]["heads"].values()} == {3}


def test_a_round_that_fails_after_its_training_reports_still_commits_their_charges(
        tmp_path, config):
    def lose_the_link(server_round: int) -> None:
        if server_round == 2:
            raise ConnectionError("link to the SuperLink lost during the unmask stage")

    workflow = ChargingWorkflow(tmp_path / "nodes", config, after_reports=lose_the_link)
    with pytest.raises(ConnectionError, match="unmask stage"):
        run_federation(InProcessGrid(3), config, workflow, node_wait_timeout=5)
    (run_dir,) = (tmp_path / "runs").iterdir()
    # Round 2's clients were charged and said so: the coordinator's copy holds it.
    assert merged_rounds(run_dir) == [1] * 3 + [2] * 3
    with PrivacyLedger(run_dir / "ledger.sqlite", read_only=True) as merged:
        assert merged.verify().ok
