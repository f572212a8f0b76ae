"""Whether a simulation can run at all, checked before Ray or Flower is started.

Only the data is loaded (torch, no Flower): the command line runs this first and starts
Ray only once the input is known to be good.
"""

from __future__ import annotations

from task.config import ConfigError, RunConfig
from task.datasets import load_dataset
from task.model import model_input_shape
from task.partition import PartitionError, partition_indices
from task.scenarios import SCENARIOS


def check_feasible(config: RunConfig, num_clients: int) -> None:
    """Load the data and partition it once, so bad input fails before any training.

    Raises ConfigError when the model cannot take the dataset's images, DataRootError
    for missing data and PartitionError when the training records
    cannot be split among ``num_clients`` clients. With partitioning "sampled" each client
    draws its own records, so only records-per-client is checked against the training
    split (nothing is built for the whole population).
    """
    if num_clients < config.min_train_clients:
        raise ConfigError(
            f"--clients {num_clients} is fewer than config key 'min-train-clients' "
            f"({config.min_train_clients})"
        )
    dataset = SCENARIOS[config.scenario].dataset
    splits = load_dataset(dataset, config.data_root or None, config.seed)
    try:
        model_input_shape(splits.shape, config.model)
    except ValueError as error:
        raise ConfigError(
            f"config key 'model' is {config.model!r}, which cannot take scenario "
            f"'{config.scenario}' (dataset '{dataset}'): {error}"
        ) from None
    if config.partitioning == "sampled":
        num_records = len(splits.train.labels)
        if config.records_per_client > num_records:
            raise PartitionError(
                f"scenario '{config.scenario}' (dataset '{dataset}'): config key "
                f"'records-per-client' is {config.records_per_client} but the training "
                f"split has {num_records} records (partitioning 'sampled' draws each "
                f"client's records without replacement from it)"
            )
        return
    try:
        partition_indices(
            splits.train.labels.numpy(),
            num_clients,
            scheme=config.partitioning,
            alpha=config.dirichlet_alpha,
            seed=config.seed,
        )
    except PartitionError as error:
        raise PartitionError(f"scenario '{config.scenario}' (dataset '{dataset}'): {error}") from None
