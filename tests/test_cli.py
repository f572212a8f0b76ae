"""The fedshield command: bad input stops before training with a one-line error."""

import pytest

from tests.cli_runner import fedshield


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-epsilon", "-1"], "config key 'target-epsilon' must be > 0, got -1.0"),
        (["--partitioning", "dirichlet", "--alpha", "0"],
         "config key 'dirichlet-alpha' must be > 0, got 0.0"),
        (["--clients", "5000"], "5000"),
        (["--scenario", "mars"], "config key 'scenario' must be one of digits, hospitals, banks, cifar10"),
        (["--scenario", "hospitals", "--data-root", "/nonexistent/data"], "/nonexistent/data"),
        (["--set", "learning-rte=0.1"], "unknown config key 'learning-rte'"),
        (["--no-dp", "--target-epsilon", "3"], "--no-dp cannot be combined"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message, tmp_path):
    result = fedshield("simulate", "--out", str(tmp_path / "runs"), *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_data_root_names_the_expected_files(tmp_path):
    result = fedshield("simulate", "--scenario", "hospitals", "--data-root", str(tmp_path),
                       cwd=tmp_path)
    assert result.returncode == 2
    assert "pneumoniamnist.npz" in result.stderr


def test_too_many_clients_names_the_limit(tmp_path):
    result = fedshield("simulate", "--clients", "5000", cwd=tmp_path)
    assert result.returncode == 2
    assert "5000" in result.stderr and "digits" in result.stderr.lower()


def test_sweep_refuses_overlapping_sampled_records(tmp_path):
    result = fedshield("sweep", "--partitioning", "sampled", "--out", str(tmp_path / "sweep"),
                       cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'sampled'" in lines[0], result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_simulate_runs_and_prints_the_summary_as_json(tmp_path):
    import json

    result = fedshield("simulate", "--clients", "3", "--rounds", "2", "--json",
                       "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rounds_completed"] == 2 and summary["clients"] == 3
    assert 0 < summary["epsilon_max"] <= summary["config"]["target-epsilon"]
    assert (tmp_path / "runs").is_dir() and "Traceback" not in result.stderr
