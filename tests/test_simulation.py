"""A real Flower simulation (Ray backend) end to end."""

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from opacus.accountants import create_accountant

from client.data import load_client_data
from privacy.accounting import accountant_epsilon
from simulations.run import simulate
from task.config import resolve_config
from task.feature_cache import shared_inputs
from task.features import scattering_features

pytestmark = pytest.mark.slow


def test_three_clients_two_rounds_learn_with_dp(tmp_path: Path):
    config = resolve_config(
        {"scenario": "digits", "num-server-rounds": 2, "out-dir": str(tmp_path),
         "target-epsilon": 8.0, "local-epochs": 2}
    )
    summary = simulate(config, num_clients=3)

    chance = 1 / 10
    assert summary["rounds_completed"] == 2
    assert summary["accuracy"] > chance + 0.15, summary["accuracy"]
    assert 0 < summary["epsilon_max"] <= 8.0
    results = Path(summary["results_dir"])
    on_disk = json.loads((results / "summary.json").read_text())
    for key in ("accuracy", "loss", "epsilon_max", "delta", "rounds_completed", "clients",
                "seconds", "config"):
        assert key in on_disk
    assert on_disk["clients"] == 3 and on_disk["delta"] == 1e-5
    assert (results / "model.pt").stat().st_size > 0
    rounds = list(csv.DictReader(open(results / "rounds.csv")))
    assert [int(r["round"]) for r in rounds] == [1, 2]

    # Each client's epsilon grows from round to round and equals an Opacus accountant
    # stepped through the same steps (every client trains every round here).
    rows = list(csv.DictReader(open(results / "client_epsilon.csv")))
    assert {r["client_id"] for r in rows} == {"client-0", "client-1", "client-2"}
    for client in ("client-0", "client-1", "client-2"):
        eps = [float(r["epsilon"]) for r in rows if r["client_id"] == client]
        assert len(eps) == 2 and 0 < eps[0] < eps[1] <= 8.0
    for client in summary["client_epsilon"].values():
        assert client["rounds_trained"] == 2
        reference = create_accountant("prv")
        for _ in range(client["steps"]):
            reference.step(noise_multiplier=client["noise-multiplier"],
                           sample_rate=client["sample-rate"])
        assert client["final"] == pytest.approx(accountant_epsilon(reference, 1e-5), abs=1e-4)


def test_scatternet_variant_learns_under_secure_aggregation(tmp_path: Path):
    """The ScatterNet classifier (fixed features, one Linear layer) through Flower and
    SecAgg+: the clients compute their features, the server its test set's."""
    config = resolve_config(
        {"scenario": "digits", "num-server-rounds": 2, "out-dir": str(tmp_path),
         "model": "scatternet"}
    )
    summary = simulate(config, num_clients=3)

    assert summary["rounds_completed"] == 2
    assert summary["accuracy"] > 0.75, summary["accuracy"]
    assert 0 < summary["epsilon_max"] <= config.target_epsilon
    on_disk = json.loads((Path(summary["results_dir"]) / "summary.json").read_text())
    assert on_disk["config"]["model"] == "scatternet"
    assert on_disk["secure_aggregation"] is True

    def refuse(images: torch.Tensor) -> torch.Tensor:
        raise AssertionError("these features should have been in the shared folder")

    # Each client's features were written by the actor (a Ray worker process) that first
    # computed them, for the other actor to read.
    pixels = dataclasses.replace(config, model="lenet")  # the same records, as images
    for partition_id in range(3):
        images = load_client_data(partition_id, 3, pixels).train_images
        assert torch.equal(shared_inputs(images, "scatternet", refuse),
                           scattering_features(images))


def test_round_one_samples_its_fraction_of_a_large_population(tmp_path: Path):
    """Flower registers a simulation's nodes while the ServerApp starts; round 1 waits
    for all of them, so it samples the configured fraction of the whole population."""
    config = resolve_config(
        {"scenario": "digits", "num-server-rounds": 1, "out-dir": str(tmp_path),
         "partitioning": "sampled", "records-per-client": 16, "fraction-train": 0.0006,
         "secure-aggregation": False}
    )
    summary = simulate(config, num_clients=10_000)

    rounds = list(csv.DictReader(open(Path(summary["results_dir"]) / "rounds.csv")))
    assert [int(r["trained"]) for r in rounds] == [6]  # ceil(0.0006 * 10,000)
