"""``fedshield sweep``: planning, summaries and files (fast), and one tiny real sweep (slow)."""

import csv
import json

import pytest

from tests.cli_runner import fedshield
from simulations.sweep import (
    parse_epsilons,
    parse_seeds,
    plan_sweep,
    run_sweep,
    summarise,
    write_sweep,
)
from task.config import ConfigError


def test_parse_lists():
    assert parse_epsilons("3, 0.5,1,3") == [0.5, 1.0, 3.0]
    assert parse_seeds("2,0,2") == [2, 0]
    for bad in ("", "a", "0", "-1", "inf"):
        with pytest.raises(ValueError):
            parse_epsilons(bad)
    for bad in ("", "1.5", "-1"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_plan_puts_the_baseline_first_and_refuses_sweep_keys(tmp_path):
    configs = plan_sweep({"scenario": "digits"}, [1.0, 3.0], [0, 1], tmp_path)
    assert [(c.dp, c.target_epsilon if c.dp else None, c.seed) for c in configs] == [
        (False, None, 0), (True, 1.0, 0), (True, 3.0, 0),
        (False, None, 1), (True, 1.0, 1), (True, 3.0, 1),
    ]
    assert all(c.out_dir == str(tmp_path / "runs") for c in configs)
    with pytest.raises(ConfigError, match="target-epsilon"):
        plan_sweep({"target-epsilon": 2}, [1.0], [0], tmp_path)


def fake_runner(config, num_clients):
    accuracy = 0.9 if not config.dp else 0.5 + 0.1 * config.target_epsilon + 0.01 * config.seed
    return {"accuracy": accuracy, "loss": 1 - accuracy,
            "epsilon_max": config.target_epsilon - 0.01 if config.dp else 0.0,
            "rounds_completed": config.num_server_rounds, "seconds": 1.0,
            "results_dir": f"runs/{config.seed}"}


def test_summary_files_and_plot(tmp_path):
    configs = plan_sweep({"scenario": "digits"}, [1.0, 3.0], [0, 2], tmp_path)
    runs = run_sweep(configs, 3, runner=fake_runner)
    points = summarise(runs)
    assert [p.target_epsilon for p in points] == [None, 1.0, 3.0]
    assert points[1].accuracy_mean == pytest.approx(0.61)
    assert points[1].accuracy_min == pytest.approx(0.60)
    assert points[2].epsilon_spent_max == pytest.approx(2.99)
    paths = write_sweep(tmp_path, runs, {"scenario": "digits", "delta": 1e-5}, "digits")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 6 and rows[0]["target_epsilon"] == ""
    document = json.loads(paths["json"].read_text())
    assert document["baseline"]["accuracy_mean"] == pytest.approx(0.9)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilons", "1,x"], "--epsilons"),
        (["--seeds", "0,-2"], "--seeds"),
        (["--clients", "0"], "--clients"),
        (["--set", "target-epsilon=2"], "set by the sweep"),
        (["--partitioning", "dirichlet", "--alpha", "0"], "'dirichlet-alpha'"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message, tmp_path):
    from typer.testing import CliRunner

    from fedshield.cli import _register_commands, app

    if "sweep" not in {c.name for c in app.registered_commands}:
        _register_commands()
    result = CliRunner().invoke(app, ["sweep", "--out", str(tmp_path / "sweep"), *args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_tiny_real_sweep_writes_table_and_plot(tmp_path):
    out = tmp_path / "sweep"
    result = fedshield("sweep", "--scenario", "digits", "--clients", "3", "--rounds", "1",
                       "--epsilons", "1,8", "--seeds", "0", "--out", str(out),
                       "--set", "secure-aggregation=false", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr
    for name in ("sweep.csv", "sweep_summary.csv", "sweep.json", "sweep.png"):
        assert (out / name).stat().st_size > 0
    document = json.loads((out / "sweep.json").read_text())
    assert document["baseline"] is not None and 0.0 <= document["baseline"]["accuracy_mean"] <= 1
    private = [r for r in document["runs"] if r["target_epsilon"] is not None]
    assert sorted(r["target_epsilon"] for r in private) == [1.0, 8.0]
    assert all(r["epsilon_spent_max"] <= r["target_epsilon"] for r in private)
    assert len(list(csv.DictReader((out / "sweep.csv").open()))) == 3
