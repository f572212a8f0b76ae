"""Configuration is validated once, with messages that name the key."""

import tomllib
from pathlib import Path

import pytest

from task.config import DEFAULTS, ConfigError, RunConfig, resolve_config
from task.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_take_the_scenario_preset():
    config = resolve_config({"scenario": "hospitals"})
    assert config.num_server_rounds == SCENARIOS["hospitals"].preset["num_server_rounds"]
    assert config.batch_size == SCENARIOS["hospitals"].preset["batch_size"]


def test_banks_and_cifar10_take_the_scatternet_unless_the_lenet_is_asked_for():
    assert resolve_config({"scenario": "banks"}).model == "scatternet"
    assert resolve_config({"scenario": "cifar10"}).model == "scatternet"
    assert resolve_config({"scenario": "banks", "model": ""}).model == "scatternet"
    lenet = resolve_config({"scenario": "banks", "model": "lenet"})
    assert (lenet.model, lenet.activation) == ("lenet", "tanh")
    assert resolve_config({}).model == "lenet"  # the quick start keeps the seed's CNN


def test_explicit_values_win_over_the_preset():
    config = resolve_config({"scenario": "hospitals", "num-server-rounds": 3, "batch_size": 16})
    assert (config.num_server_rounds, config.batch_size) == (3, 16)


def test_pyproject_config_lists_every_knob_and_resolves():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    flower_config = pyproject["tool"]["flwr"]["app"]["config"]
    assert set(flower_config) == set(DEFAULTS.to_flower())
    config = resolve_config(flower_config)
    assert config == resolve_config({})


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"target-epsilon": -1.0}, "'target-epsilon' must be > 0"),
        ({"dirichlet-alpha": 0.0}, "'dirichlet-alpha' must be > 0"),
        ({"dirichlet-alpha": -2.0}, "'dirichlet-alpha' must be > 0"),
        ({"scenario": "moon"}, "'scenario' must be one of digits, hospitals, banks, cifar10"),
        ({"fraction-train": 1.5}, "'fraction-train' must be in (0, 1]"),
        ({"delta": 1.0}, "'delta' must be in (0, 1)"),
        ({"accountant": "gdp"}, "'accountant' must be one of"),
        ({"partitioning": "random"}, "'partitioning' must be one of"),
        ({"records-per-client": 1}, "config key 'records-per-client' must be >= 2, got 1"),
        ({"records-per-client": 0}, "config key 'records-per-client' must be >= 2, got 0"),
        ({"records-per-client": 2.5}, "'records-per-client' must be an integer"),
        ({"num-server-rounds": 2.5}, "'num-server-rounds' must be an integer"),
        ({"dp": "maybe"}, "'dp' must be true or false"),
        ({"learning-rte": 0.1}, "unknown config key 'learning-rte'"),
        ({"augment-multiplicity": 65}, "'augment-multiplicity' must be in [1, 64]"),
        ({"augment-multiplicity": 4, "dp-engine": "opacus"},
         "'augment-multiplicity' must be 1 with dp-engine 'opacus'"),
        ({"model": "resnet"}, "config key 'model' must be one of ('lenet', 'scatternet')"),
        ({"augment-multiplicity": 4, "model": "scatternet"},
         "'augment-multiplicity' must be 1 with model 'scatternet'"),
    ],
)
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as error:
        resolve_config(overrides)
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_flower_round_trip():
    config = resolve_config({"scenario": "banks", "seed": 7})
    assert resolve_config(config.to_flower()) == config
    assert isinstance(config, RunConfig)


def test_sampled_partitioning_and_records_per_client_flow_through():
    assert DEFAULTS.records_per_client == 16
    assert DEFAULTS.to_flower()["records-per-client"] == 16
    config = resolve_config({"partitioning": "sampled", "records-per-client": 32})
    assert (config.partitioning, config.records_per_client) == ("sampled", 32)
    assert resolve_config(config.to_flower()) == config


def test_small_budgets_take_their_own_preset_unless_set_explicitly():
    hospitals = {"scenario": "hospitals"}
    assert resolve_config({**hospitals, "target-epsilon": 1.0}).num_server_rounds == 10
    assert resolve_config({**hospitals, "target-epsilon": 0.5}).num_server_rounds == 10
    assert resolve_config({**hospitals, "target-epsilon": 3.0}).num_server_rounds == 20
    assert resolve_config(hospitals).num_server_rounds == 20  # the preset's own epsilon 3
    assert resolve_config({**hospitals, "target-epsilon": 1.0,
                           "num-server-rounds": 15}).num_server_rounds == 15
    assert resolve_config({**hospitals, "dp": False}).num_server_rounds == 20
    small = resolve_config({**hospitals, "target-epsilon": 1.0})
    assert (small.server_optimizer, small.learning_rate, small.server_learning_rate) == (
        "fedavgm", 0.3, 0.5)
    assert resolve_config(hospitals).server_optimizer == "fedavg"
