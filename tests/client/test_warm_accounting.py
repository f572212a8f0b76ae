"""The driver calibrates its clients' noise and computes their epsilons ahead of them,
through the run's shared folder."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import sys
from pathlib import Path

import pytest

from client.data import load_client_data, training_record_counts
from client.local_round import calibrated_noise, shared_epsilon, training_plan, warm_accounting
from privacy.accounting import DPStep, calibrate_noise, compute_epsilon
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
    warm_accounting(config, counts)
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


READ_WITHOUT_OPACUS = """
import json, sys
from client.local_round import shared_epsilon
from privacy.accounting import DPStep
sys.modules["opacus"] = None  # importing it now fails: every epsilon must be read
history, delta, accountant = json.loads(sys.argv[1])
print(json.dumps([shared_epsilon([DPStep(*step) for step in steps], delta, accountant)
                  for steps in history]))
"""


def _read_without_opacus(folder, histories, delta, accountant):
    return subprocess.run(
        [sys.executable, "-c", READ_WITHOUT_OPACUS, json.dumps([histories, delta, accountant])],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, FEATURE_CACHE_ENV: folder},
    )


@pytest.mark.parametrize("overrides", [{"target-epsilon": 4.0}, {"noise-multiplier": 1.3}])
def test_epsilons_computed_ahead_serve_every_round_of_a_client_without_opacus(
    monkeypatch, tmp_path, overrides
):
    config = resolve_config({"scenario": "digits", "num-server-rounds": 3, **overrides})
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    counts = training_record_counts(config, 4)
    warm_accounting(config, counts)
    plan = training_plan(config)
    q, steps = plan.sample_rate(counts[0]), plan.steps(counts[0])
    sigma = (config.noise_multiplier if "noise-multiplier" in overrides
             else calibrated_noise(config, q, 3 * steps))
    histories = [[(sigma, q, k * steps)] for k in (1, 2, 3)]
    out = _read_without_opacus(str(tmp_path), histories, config.delta, config.accountant)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = [compute_epsilon([DPStep(*h[0])], config.delta, config.accountant)
                for h in histories]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected
    assert expected[0] < expected[1] < expected[2]
    # A history the driver did not foresee is computed by the client (here: with Opacus).
    assert shared_epsilon([DPStep(sigma, q, 4 * steps)], config.delta, config.accountant) == (
        compute_epsilon([DPStep(sigma, q, 4 * steps)], config.delta, config.accountant))


def test_nothing_ahead_without_dp_and_no_more_than_the_limit(monkeypatch, tmp_path):
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    warm_accounting(resolve_config({"scenario": "digits", "dp": False}), [100, 200])
    assert list(tmp_path.iterdir()) == []
    calibrated = resolve_config({"scenario": "digits", "batch-size": 16, "num-server-rounds": 2})
    warm_accounting(calibrated, [32, 48, 64, 80], limit=1)  # four sample rates
    assert len(list(tmp_path.iterdir())) == 1 + 2  # one sigma, an epsilon for each round


def test_the_accounting_stops_where_the_run_says(monkeypatch, tmp_path):
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    config = resolve_config({"scenario": "digits", "num-server-rounds": 5})
    asked: list[int] = []
    warm_accounting(config, training_record_counts(config, 4),
                    before_round=lambda k: asked.append(k) or k <= 2)
    assert asked == [1, 2, 3]
    assert len(list(tmp_path.iterdir())) == 1 + 2  # the sigma and two rounds' epsilons


def test_the_pace_keeps_the_accounting_two_rounds_ahead_of_the_run():
    from simulations.run import AccountingPace

    pace = AccountingPace()
    assert pace.before_round(1) and pace.before_round(2)
    answers: list[bool] = []
    waiting = threading.Thread(target=lambda: answers.append(pace.before_round(4)))
    waiting.start()
    pace.round_ended(1)  # round 4 is not due yet
    waiting.join(0.5)
    assert waiting.is_alive() and answers == []
    pace.round_ended(2)
    waiting.join(10)
    assert answers == [True]
    later = threading.Thread(target=lambda: answers.append(pace.before_round(9)))
    later.start()
    pace.stop()  # the run is over: nothing more is computed
    later.join(10)
    assert answers == [True, False] and pace.stopped


BLAS_THREADS_AROUND_THE_ACCOUNTING = """
import json
from threadpoolctl import threadpool_info, threadpool_limits
from simulations.run import start_warm_accounting
from task.config import resolve_config
def blas_threads():
    return sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
threadpool_limits(2, user_api="blas")  # as on two cores, whatever this machine has
before = blas_threads()
config = resolve_config({"scenario": "digits", "num-server-rounds": 1})
start_warm_accounting(config, 2).stop()
print(json.dumps([before, blas_threads()]))
"""


def test_the_driver_computes_its_accounting_with_one_blas_thread():
    # One BLAS thread per core, beside Ray's start and the client actors, made the PRV
    # accountant's dot products wait for threads kept off their cores.
    out = subprocess.run([sys.executable, "-c", BLAS_THREADS_AROUND_THE_ACCOUNTING],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == [2] and after == [1]
