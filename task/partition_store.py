"""One client's partition on disk: the only data a deployed SuperNode's container sees.

A partition folder holds two files::

    data.npz        images: float32 (N, C, H, W), already normalised;  labels: int64 (N,)
    manifest.json   what the data is: format, dataset, classes, normalisation, which
                    partition of which split, the client's id, and data.npz's SHA-256

The images are stored exactly as the simulation's client sees them (normalised with the
training split's per-channel statistics, in the partition's record order), so a deployed
client trains on the very records, in the very order, that its simulated twin does.
``np.load`` runs with ``allow_pickle=False``: a partition file cannot carry code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from task.config import RunConfig
from task.datasets import load_dataset
from task.partition import PARTITION_SCHEMES, PartitionError, partition_indices
from task.scenarios import SCENARIOS

__all__ = [
    "DATA_FILE",
    "FORMAT",
    "MANIFEST_FILE",
    "PartitionStoreError",
    "StoredPartition",
    "load_partition",
    "save_partition",
    "write_client_partitions",
]

FORMAT = "fedshield-partition/1"
DATA_FILE = "data.npz"
MANIFEST_FILE = "manifest.json"


class PartitionStoreError(ValueError):
    """A partition folder is missing, incomplete, altered or malformed."""


@dataclass(frozen=True, eq=False)
class StoredPartition:
    """A partition read back from disk."""

    images: torch.Tensor
    labels: torch.Tensor
    manifest: dict[str, Any]

    @property
    def client_id(self) -> str:
        return str(self.manifest["client-id"])

    @property
    def partition_id(self) -> int:
        return int(self.manifest["partition-id"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_partition(
    folder: str | Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    manifest: dict[str, Any],
    force: bool = False,
) -> Path:
    """Write ``images``, ``labels`` and ``manifest`` (plus format, size, checksum) to
    ``folder``; an existing partition is only replaced with ``force``."""
    folder = Path(folder)
    data_path, manifest_path = folder / DATA_FILE, folder / MANIFEST_FILE
    if not force and (data_path.exists() or manifest_path.exists()):
        raise PartitionStoreError(f"'{folder}' already holds a partition; pass --force to replace it")
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
        raise PartitionStoreError(
            f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{DATA_FILE}.tmp"
    with tmp.open("wb") as handle:
        np.savez(
            handle,
            images=images.detach().cpu().numpy().astype(np.float32, copy=False),
            labels=labels.detach().cpu().numpy().astype(np.int64, copy=False),
        )
    os.replace(tmp, data_path)
    full = {
        **manifest,
        "format": FORMAT,
        "num-records": int(len(labels)),
        "shape": [int(d) for d in images.shape[1:]],
        "sha256": _sha256(data_path),
    }
    manifest_path.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return folder


def load_partition(folder: str | Path) -> StoredPartition:
    """Read and check a partition folder written by :func:`save_partition`."""
    folder = Path(folder)
    data_path, manifest_path = folder / DATA_FILE, folder / MANIFEST_FILE
    for path in (manifest_path, data_path):
        if not path.is_file():
            raise PartitionStoreError(
                f"no partition in '{folder}': '{path.name}' is missing (write one with "
                "`fedshield partition`)"
            )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PartitionStoreError(f"cannot read '{manifest_path}': {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PartitionStoreError(f"'{manifest_path}' is not a {FORMAT} manifest")
    if _sha256(data_path) != manifest.get("sha256"):
        raise PartitionStoreError(
            f"'{data_path}' does not match the SHA-256 in its manifest (altered or truncated)"
        )
    try:
        with np.load(data_path, allow_pickle=False) as arrays:
            images, labels = arrays["images"], arrays["labels"]
    except (OSError, KeyError, ValueError) as err:
        raise PartitionStoreError(f"cannot read '{data_path}': {err}") from None
    classes = manifest.get("classes") or []
    ok = (
        images.dtype == np.float32
        and labels.dtype == np.int64
        and images.ndim == 4
        and list(images.shape[1:]) == manifest.get("shape")
        and len(images) == len(labels) == manifest.get("num-records")
        and (len(labels) == 0 or (0 <= labels.min() and labels.max() < len(classes)))
    )
    if not ok:
        raise PartitionStoreError(f"'{data_path}' does not match its manifest '{manifest_path}'")
    return StoredPartition(torch.from_numpy(images), torch.from_numpy(labels), manifest)


def write_client_partitions(
    config: RunConfig, num_clients: int, out_dir: str | Path, force: bool = False
) -> list[tuple[Path, int]]:
    """Split the scenario's training data as the simulation does and write partition i
    to ``out_dir/client-<i>/``; return (folder, records) per client.

    Nothing is written when any target folder already holds a partition (unless
    ``force``), so a half-replaced set of partitions cannot happen by mistake. Partitioning
    "sampled" is refused (PartitionError): its clients' records overlap.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise PartitionStoreError(f"--clients must be an integer >= 1, got {num_clients!r}")
    if config.partitioning not in PARTITION_SCHEMES:
        raise PartitionError(
            f"partitioning '{config.partitioning}' cannot be written as client folders: "
            "sampled records overlap between clients, so a deployment needs a disjoint "
            f"scheme ({', '.join(PARTITION_SCHEMES)})"
        )
    dataset = SCENARIOS[config.scenario].dataset
    train = load_dataset(dataset, config.data_root or None, config.seed).train
    parts = partition_indices(
        train.labels.numpy(), num_clients, scheme=config.partitioning,
        alpha=config.dirichlet_alpha, seed=config.seed, dataset_name=dataset,
    )
    folders = [Path(out_dir) / f"client-{i}" for i in range(num_clients)]
    if not force:
        for folder in folders:
            if (folder / DATA_FILE).exists() or (folder / MANIFEST_FILE).exists():
                raise PartitionStoreError(
                    f"'{folder}' already holds a partition; pass --force to replace it"
                )
    written = []
    for i, (folder, indices) in enumerate(zip(folders, parts)):
        index = torch.from_numpy(indices)
        manifest = {
            "client-id": folder.name, "partition-id": i, "num-partitions": num_clients,
            "scenario": config.scenario, "dataset": dataset, "source": f"{dataset}, training split",
            "partitioning": config.partitioning, "dirichlet-alpha": config.dirichlet_alpha,
            "seed": config.seed, "classes": list(train.classes), "mean": list(train.mean),
            "std": list(train.std),
        }
        save_partition(folder, train.images[index], train.labels[index], manifest, force=force)
        written.append((folder, len(indices)))
    return written
