"""A client killed (SIGKILL) between charging and replying keeps the charge, and a
restarted client goes on from the epsilon it had spent, not from zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from client.ledger_charge import FAULT_ENV, ClientLedger
from privacy.accounting import DPStep, compute_epsilon
from privacy.ledger import PrivacyLedger
from task.config import resolve_config
from tests.client.drive_client_round import RUN_CONFIG

ROOT = Path(__file__).parents[2]


def client_round(ledger_dir: Path, server_round: int, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "tests.client.drive_client_round", str(ledger_dir), str(server_round)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_a_charge_survives_a_kill_before_the_reply_and_the_client_resumes(tmp_path: Path):
    ledger_dir = tmp_path / "ledger"
    killed = client_round(ledger_dir, 1, fault="kill-after-charge")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert killed.stdout == ""  # no reply left the client

    with PrivacyLedger(ledger_dir / "client-0.sqlite", read_only=True) as ledger:
        assert ledger.verify().ok
        (entry,) = ledger.entries()
    assert entry.charge.round == 1 and entry.charge.epsilon_after > 0

    config = resolve_config(RUN_CONFIG)
    restarted = ClientLedger.open({"ledger-dir": str(ledger_dir)}, config, "client-0", {"run-id": "crash-run"})
    history = restarted.history()
    assert compute_epsilon(history, config.delta, config.accountant) == entry.charge.epsilon_after

    resumed = client_round(ledger_dir, 2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reply = json.loads(resumed.stdout.strip().splitlines()[-1])
    steps = history[0].steps
    both_rounds = [DPStep(history[0].noise_multiplier, history[0].sample_rate, 2 * steps)]
    assert reply == {"status": "trained", "head-seq": 2,
                     "epsilon": compute_epsilon(both_rounds, config.delta, config.accountant)}
    assert reply["epsilon"] > entry.charge.epsilon_after
