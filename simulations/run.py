"""The one-command simulation: many clients on one machine, Flower's simulation engine.

Everything is checked before Ray starts (configuration, data root, whether the data can
be split among the clients), so a mistake costs a second, not a cluster start-up.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable

from flwr.simulation import run_simulation

from client.app import app as client_app
from server.app import make_server_app
from server.results import RoundRecord
from simulations import dispatch
from task.config import ConfigError, RunConfig
from task.datasets import load_dataset
from task.partition import PartitionError, partition_indices
from task.scenarios import SCENARIOS


def check_feasible(config: RunConfig, num_clients: int) -> None:
    """Load the data and partition it once, so bad input fails before any training.

    Raises DataRootError for missing data and PartitionError when the training records
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


def backend_config(cpus: int | None = None) -> dict:
    """Ray resources: one CPU per client actor, as many actors as cores."""
    cpus = cpus or os.cpu_count() or 1
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False},
    }


def simulate(
    config: RunConfig,
    num_clients: int,
    on_round: Callable[[RoundRecord], None] | None = None,
    verbose: bool = False,
) -> dict:
    """Run ``config`` with ``num_clients`` virtual clients; return the run summary."""
    check_feasible(config, num_clients)
    dispatch.install()
    summaries: list[dict] = []
    if not verbose:
        # Flower announces run_simulation's deprecation at WARNING on every run; our own
        # round log and progress bar carry what the user needs.
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    run_simulation(
        server_app=make_server_app(config, on_round=on_round, on_summary=summaries.append),
        client_app=client_app,
        num_supernodes=num_clients,
        backend_config=backend_config(),
        verbose_logging=verbose,
    )
    if not summaries:
        raise RuntimeError("the simulation ended without a summary; see the log above")
    return summaries[0]
