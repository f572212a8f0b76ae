"""The records one client holds: its partition of the scenario's training data.

In simulation a client is identified by Flower's ``partition-id`` node config and owns
one partition of the shared training split; it keeps part of it for local validation.
Partitions are index arrays into one in-memory copy of the dataset per process, so many
virtual clients never copy the data.

A client holds what its model takes (``task.model.model_inputs``): the images, or for the
``scatternet`` model their scattering features, computed once per process and client (and
once per simulation: ``task.feature_cache`` shares them between the client actors).

Deployed, a SuperNode's node config names a folder holding only that client's partition
(``--node-config "data-path='/data' client-id='hospital-3'"``, written by ``fedshield
partition``); ``load_node_data`` picks whichever of the two the node config describes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from task.config import ConfigError, RunConfig
from task.datasets import load_dataset
from task.model import model_inputs
from task.partition import PartitionError, partition_indices, sampled_indices, split_train_val
from task.partition_store import MANIFEST_FILE, PartitionStoreError, load_partition
from task.scenarios import SCENARIOS

# Node config keys of a deployed SuperNode.
DATA_PATH_KEY = "data-path"
CLIENT_ID_KEY = "client-id"


class NodeDataError(ConfigError):
    """The node's own data (node config 'data-path') is missing or does not fit the run."""


@dataclass(frozen=True)
class ClientData:
    """A client's local training and validation records."""

    client_id: str
    num_classes: int
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor


@lru_cache(maxsize=4)
def _partitions(
    dataset: str, data_root: str, seed: int, num_partitions: int, scheme: str, alpha: float
) -> list[np.ndarray]:
    splits = load_dataset(dataset, data_root or None, seed)
    return partition_indices(
        splits.train.labels.numpy(), num_partitions, scheme=scheme, alpha=alpha, seed=seed
    )


def load_client_data(partition_id: int, num_partitions: int, config: RunConfig) -> ClientData:
    """The records of simulated client ``partition_id`` out of ``num_partitions``.

    With partitioning "sampled" the client's own ``records-per-client`` records are drawn
    on demand (``task.partition.sampled_indices``), never the whole population's.
    """
    dataset = SCENARIOS[config.scenario].dataset
    train = load_dataset(dataset, config.data_root or None, config.seed).train
    if config.partitioning == "sampled":
        if not 0 <= partition_id < num_partitions:
            raise PartitionError(
                f"partition-id {partition_id} is outside 0..{num_partitions - 1}"
            )
        try:
            indices = sampled_indices(
                len(train.labels), config.records_per_client, partition_id, config.seed
            )
        except PartitionError as error:
            raise PartitionError(
                f"scenario '{config.scenario}' (dataset '{dataset}'): {error}"
            ) from None
    else:
        indices = _partitions(
            dataset,
            config.data_root,
            config.seed,
            num_partitions,
            config.partitioning,
            config.dirichlet_alpha,
        )[partition_id]
    train_idx, val_idx = split_train_val(indices, config.val_fraction, config.seed + partition_id)
    return _client_data(f"client-{partition_id}", len(train.classes), train.images,
                        train.labels, train_idx, val_idx, config.model)


def training_record_counts(config: RunConfig, num_partitions: int) -> list[int]:
    """How many training records the simulated clients hold, each count once, in the
    order of the first client holding it (what :func:`load_client_data` gives them,
    without building their tensors)."""
    if config.partitioning == "sampled":
        sizes = [config.records_per_client]  # every client draws that many
    else:
        dataset = SCENARIOS[config.scenario].dataset
        parts = _partitions(dataset, config.data_root, config.seed, num_partitions,
                            config.partitioning, config.dirichlet_alpha)
        sizes = [len(part) for part in parts]
    counts: dict[int, None] = {}
    for partition_id, size in enumerate(sizes):
        train, _ = split_train_val(np.arange(size), config.val_fraction, config.seed + partition_id)
        counts.setdefault(len(train))
    return list(counts)


def _client_data(
    client_id: str, num_classes: int, images: torch.Tensor, labels: torch.Tensor,
    train_idx: np.ndarray, val_idx: np.ndarray, model: str,
) -> ClientData:
    """The client's train and validation records at positions ``train_idx``/``val_idx``
    of ``images``, as inputs of ``model``."""
    train_t = torch.from_numpy(np.asarray(train_idx, dtype=np.int64))
    val_t = torch.from_numpy(np.asarray(val_idx, dtype=np.int64))
    return ClientData(
        client_id=client_id,
        num_classes=num_classes,
        train_images=model_inputs(images[train_t], model),
        train_labels=labels[train_t],
        val_images=model_inputs(images[val_t], model),
        val_labels=labels[val_t],
    )


def node_client_id(node_config: Mapping[str, Any]) -> str:
    """The client's public name: node config 'client-id', else its partition's manifest
    (deployed), else ``client-<partition-id>`` (simulation)."""
    if CLIENT_ID_KEY in node_config:
        return str(node_config[CLIENT_ID_KEY])
    if DATA_PATH_KEY in node_config:
        folder = Path(str(node_config[DATA_PATH_KEY]))
        try:
            return str(json.loads((folder / MANIFEST_FILE).read_text())["client-id"])
        except (OSError, ValueError, KeyError, TypeError):
            return folder.name or "client"
    return f"client-{int(node_config['partition-id'])}"


def load_node_data(node_config: Mapping[str, Any], config: RunConfig) -> ClientData:
    """This node's records: from its own folder when the node config has 'data-path',
    else partition 'partition-id' of 'num-partitions' of the shared split (simulation).

    Records whose model inputs are computed (``scatternet``) are kept per process, so the
    transform runs once per client, not once per round.
    """
    if config.model == "lenet":
        return _load_node_data(node_config, config)
    return _computed_node_data(tuple(sorted(node_config.items())), config)


@lru_cache(maxsize=16)
def _computed_node_data(
    node_items: tuple[tuple[str, Any], ...], config: RunConfig
) -> ClientData:
    return _load_node_data(dict(node_items), config)


def _load_node_data(node_config: Mapping[str, Any], config: RunConfig) -> ClientData:
    if DATA_PATH_KEY not in node_config:
        return load_client_data(
            int(node_config["partition-id"]), int(node_config["num-partitions"]), config
        )
    path = node_config[DATA_PATH_KEY]
    if not isinstance(path, str) or not path:
        raise NodeDataError(f"node config '{DATA_PATH_KEY}' must be a folder path, got {path!r}")
    return load_stored_client_data(Path(path), config, node_client_id(node_config))


def load_stored_client_data(folder: Path, config: RunConfig, client_id: str) -> ClientData:
    """The records in partition folder ``folder``, split into train/validation exactly as
    the simulated client with the same partition id splits them."""
    try:
        stored = load_partition(folder)
    except PartitionStoreError as error:
        raise NodeDataError(str(error)) from None
    dataset = SCENARIOS[config.scenario].dataset
    if stored.manifest.get("dataset") != dataset:
        raise NodeDataError(
            f"node data in '{folder}' is dataset '{stored.manifest.get('dataset')}', but "
            f"the run's scenario '{config.scenario}' trains on '{dataset}'"
        )
    positions = np.arange(len(stored.labels), dtype=np.int64)
    train_pos, val_pos = split_train_val(
        positions, config.val_fraction, config.seed + stored.partition_id
    )
    return _client_data(client_id, len(stored.classes), stored.images, stored.labels,
                        train_pos, val_pos, config.model)
