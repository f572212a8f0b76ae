"""The driver calibrates its clients' noise ahead of them, through the run's shared folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client.data import load_client_data, training_record_counts
from client.local_round import calibrated_noise, training_plan, warm_noise_calibrations
from privacy.accounting import calibrate_noise
from task.config import resolve_config
from task.feature_cache import FEATURE_CACHE_ENV

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("overrides", [
    {"partitioning": "iid"},
    {"partitioning": "dirichlet", "dirichlet-alpha": 0.5},
    {"partitioning": "sampled", "records-per-client": 90},
])
def test_record_counts_are_what_the_clients_load(overrides):
    config = resolve_config({"scenario": "digits", **overrides})
    loaded = [len(load_client_data(pid, 7, config).train_labels) for pid in range(7)]
    assert training_record_counts(config, 7) == list(dict.fromkeys(loaded))


READ_WITHOUT_CALIBRATING = """
import json, sys
import privacy.accounting
def refuse(*args):
    raise SystemExit(f"calibrated {args} instead of reading the shared result")
privacy.accounting.calibrate_noise = refuse
import client.local_round
client.local_round.calibrate_noise = refuse
from client.local_round import calibrated_noise
from task.config import resolve_config
config = resolve_config(json.loads(sys.argv[1]))
print(json.dumps(calibrated_noise(config, float(sys.argv[2]), int(sys.argv[3]))))
"""


def test_a_calibration_made_ahead_is_read_by_the_client_process(monkeypatch, tmp_path):
    settings = {"scenario": "digits", "target-epsilon": 5.0, "num-server-rounds": 3}
    config = resolve_config(settings)
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    counts = training_record_counts(config, 4)
    warm_noise_calibrations(config, counts)
    plan = training_plan(config)
    sample_rate, total_steps = plan.sample_rate(counts[0]), 3 * plan.steps(counts[0])
    expected = calibrate_noise(5.0, config.delta, sample_rate, total_steps, config.accountant)
    out = subprocess.run(
        [sys.executable, "-c", READ_WITHOUT_CALIBRATING, json.dumps(settings),
         repr(sample_rate), str(total_steps)],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, FEATURE_CACHE_ENV: str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected
    assert calibrated_noise(config, sample_rate, total_steps) == expected


def test_no_calibration_ahead_without_calibrated_noise_or_beyond_the_limit(monkeypatch, tmp_path):
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    fixed = resolve_config({"scenario": "digits", "noise-multiplier": 1.2})
    warm_noise_calibrations(fixed, [100, 200])
    assert list(tmp_path.iterdir()) == []
    calibrated = resolve_config({"scenario": "digits", "batch-size": 16, "num-server-rounds": 2})
    warm_noise_calibrations(calibrated, [32, 48, 64, 80], limit=1)  # four sample rates
    assert len(list(tmp_path.iterdir())) == 1
