"""check_feasible with partitioning "sampled": records-per-client against the training
split, and nothing built for the whole population."""

from __future__ import annotations

import pytest

import simulations.feasibility as run
from task.config import resolve_config
from task.datasets import load_dataset
from task.partition import PartitionError


def _digits_train_size() -> int:
    config = resolve_config({})
    return len(load_dataset("digits", None, config.seed).train.labels)


def test_sampled_records_per_client_larger_than_the_training_split_is_refused():
    n = _digits_train_size()
    config = resolve_config({"scenario": "digits", "partitioning": "sampled",
                             "records-per-client": n + 1})
    with pytest.raises(PartitionError) as error:
        run.check_feasible(config, 10_000)
    message = str(error.value)
    for part in ("scenario 'digits'", "dataset 'digits'", "'records-per-client'",
                 str(n + 1), str(n)):
        assert part in message, message
    assert "\n" not in message


def test_sampled_ten_thousand_clients_is_feasible_without_population_partitions(monkeypatch):
    def population_wide(*args, **kwargs):
        raise AssertionError("check_feasible built partitions of the whole population")

    monkeypatch.setattr(run, "partition_indices", population_wide)
    n = _digits_train_size()
    for records in (2, 16, n):
        config = resolve_config({"partitioning": "sampled", "records-per-client": records})
        run.check_feasible(config, 10_000)


def test_disjoint_schemes_still_refuse_more_clients_than_records():
    config = resolve_config({"scenario": "digits", "partitioning": "iid"})
    with pytest.raises(PartitionError, match="10000 clients"):
        run.check_feasible(config, 10_000)
