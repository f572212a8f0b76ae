"""The records one client holds: its partition of the scenario's training data.

In simulation a client is identified by Flower's ``partition-id`` node config and owns
one partition of the shared training split; it keeps part of it for local validation.
Partitions are index arrays into one in-memory copy of the dataset per process, so many
virtual clients never copy the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from task.config import RunConfig
from task.datasets import load_dataset
from task.partition import partition_indices, split_train_val
from task.scenarios import SCENARIOS


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
    """The records of simulated client ``partition_id`` out of ``num_partitions``."""
    dataset = SCENARIOS[config.scenario].dataset
    train = load_dataset(dataset, config.data_root or None, config.seed).train
    indices = _partitions(
        dataset,
        config.data_root,
        config.seed,
        num_partitions,
        config.partitioning,
        config.dirichlet_alpha,
    )[partition_id]
    train_idx, val_idx = split_train_val(indices, config.val_fraction, config.seed + partition_id)
    train_idx_t = torch.from_numpy(np.asarray(train_idx, dtype=np.int64))
    val_idx_t = torch.from_numpy(np.asarray(val_idx, dtype=np.int64))
    return ClientData(
        client_id=f"client-{partition_id}",
        num_classes=len(train.classes),
        train_images=train.images[train_idx_t],
        train_labels=train.labels[train_idx_t],
        val_images=train.images[val_idx_t],
        val_labels=train.labels[val_idx_t],
    )
