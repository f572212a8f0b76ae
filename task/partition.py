"""Split one training set into the clients' local datasets.

Three partition schemes, each deterministic for a ``seed``; every record lands in exactly
one partition. N is the number of records, K the number of partitions (clients), and
``rng = numpy.random.default_rng(seed)``. A fourth scheme, ``sampled``, is not a
partition (see below).

``iid``
    ``perm = rng.permutation(N)``, cut into K contiguous slices whose sizes differ by at
    most one (``numpy.array_split``). This is flwr-datasets' ``IidPartitioner``
    (``Dataset.shard(K, i, contiguous=True)``) applied to the dataset shuffled by
    ``perm``.

``dirichlet`` (label skew)
    For each class k (in sorted order) draw p_k ~ Dir(alpha * 1_K) and give client j
    the records of class k between positions floor(n_k * sum_{i<j} p_k,i) and
    floor(n_k * sum_{i<=j} p_k,i); then shuffle each client's records. If some client
    holds fewer than ``min_partition_size`` records, draw all classes again, at most 11
    draws in all. Small alpha gives each client few classes; alpha -> infinity tends to
    IID. Dirichlet label skew was introduced for federated vision benchmarks by Hsu,
    Qi & Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated
    Visual Classification" (arXiv:1909.06335, 2019); this per-class-over-clients form is
    that of Yurochkin et al. (ICML 2019) and flwr-datasets' ``DirichletPartitioner``
    (``self_balancing=False, shuffle=True``), whose random draws it reproduces exactly.

``quantity`` (quantity skew)
    ``perm = rng.permutation(N)``, then client shares q ~ Dir(alpha * 1_K); client j
    gets ``min_partition_size + r_j`` records where r is q * (N - K * min_partition_size)
    rounded by largest remainder (so sizes sum to N), as contiguous slices of ``perm``
    (flwr-datasets' ``SizePartitioner`` on the shuffled dataset). Labels stay IID; only
    the amount of data differs. This is the quantity-based skew of Li, Diao, Chen & He,
    "Federated Learning on Non-IID Data Silos: An Experimental Study" (ICDE 2022), with
    a guaranteed minimum instead of re-drawing. Small alpha: a few clients hold most of
    the data.

``sampled`` (independent per-client samples; for scale and systems experiments only)
    Client j gets ``records_per_client`` distinct records drawn uniformly without
    replacement from the N records with ``numpy.random.default_rng([seed, j])``
    (``sampled_indices``): Floyd's algorithm, then a shuffle, so computing one client
    takes O(records_per_client) work and memory, whatever K and N are. This lets 10,000
    virtual clients train on a dataset of a few thousand records, and a 10,000-client
    population do the same per-round work (same records per client) as a 100-client one.
    Records are drawn independently per client, so clients' records overlap: this is
    not a partition of the data. Each client's sample-level DP guarantee still holds for
    its own data, but one record may be held by several clients, so a record's
    protection across the federation is not that of one client; do not use it for
    privacy-utility results.

Why numpy and not the flwr-datasets partitioner objects at run time: they work on a
HuggingFace ``Dataset`` and hand a partition back through ``Dataset.select``/``shard``,
measured here at 1.4-2 ms per partition (14-20 s for 10,000 clients, per process), plus
about 1 s to compute a Dirichlet split of 60,000 records, and the Dirichlet index map
is private. ``IidPartitioner`` also does not shuffle, and ``DirichletPartitioner``
warns on every re-draw and raises a bare ``ValueError``. The same math in numpy takes
milliseconds; ``tests/task/test_partition.py`` checks that it returns the very same
partitions as ``IidPartitioner``, ``DirichletPartitioner`` and ``SizePartitioner``.

``Partition`` is a client's view of the shared (cached) dataset tensors: it holds the
client's indices and indexes the shared tensors lazily, so simulating thousands of
clients in one process does not copy the dataset per client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "MAX_DIRICHLET_DRAWS",
    "PARTITION_SCHEMES",
    "Partition",
    "PartitionError",
    "dirichlet_label_skew",
    "iid_partition",
    "make_partitions",
    "partition_indices",
    "quantity_skew",
    "sampled_indices",
    "split_train_val",
]

PARTITION_SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "quantity")
MAX_DIRICHLET_DRAWS = 11  # flwr-datasets' DirichletPartitioner: 1 draw + 10 re-draws


class PartitionError(ValueError):
    """A partitioning request that cannot be met; the message names the problem."""


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_partition_size: int = 2,
    *,
    dataset_name: str | None = None,
) -> list[np.ndarray]:
    """Split record indices ``0..N-1`` into ``num_partitions`` disjoint partitions.

    Args:
        labels: shape (N,), one class label per record (only ``dirichlet`` reads the
            values; the other schemes use N).
        num_partitions: K, the number of clients (>= 1).
        scheme: one of ``PARTITION_SCHEMES``; the math is in the module docstring.
        alpha: Dirichlet concentration for ``dirichlet`` and ``quantity`` (> 0).
        seed: seeds every random draw; the same arguments give the same partitions.
        min_partition_size: the fewest records any partition may hold (>= 1).
        dataset_name: only used to make error messages name the dataset.

    Returns:
        K int64 arrays of record indices; together they hold each index exactly once.

    Raises:
        PartitionError: bad arguments, more partitions than records allow, or a
            Dirichlet label split that left some client below ``min_partition_size``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise PartitionError(f"labels must be one-dimensional, got shape {labels.shape}")
    if scheme not in PARTITION_SCHEMES:
        raise PartitionError(
            f"unknown partition scheme {scheme!r}: expected one of "
            + ", ".join(map(repr, PARTITION_SCHEMES))
        )
    _check_int("num_partitions", num_partitions, minimum=1)
    _check_int("min_partition_size", min_partition_size, minimum=1)
    _check_int("seed", seed, minimum=0)
    n = int(labels.shape[0])
    if num_partitions * min_partition_size > n:
        what = f"dataset {dataset_name!r}" if dataset_name else "the dataset"
        most = n // min_partition_size
        raise PartitionError(
            f"{num_partitions} clients but {what} has {n} training records: at most "
            f"{most} clients with at least {min_partition_size} records each"
        )
    if scheme == "iid":
        return iid_partition(n, num_partitions, seed)
    _check_alpha(alpha)
    if scheme == "dirichlet":
        return dirichlet_label_skew(labels, num_partitions, alpha, seed, min_partition_size)
    return quantity_skew(n, num_partitions, alpha, seed, min_partition_size)


def sampled_indices(
    num_records: int, records_per_client: int, partition_id: int, seed: int
) -> np.ndarray:
    """Client ``partition_id``'s records under the ``sampled`` scheme (module docstring).

    ``records_per_client`` distinct indices drawn uniformly without replacement from
    ``range(num_records)`` with ``numpy.random.default_rng([seed, partition_id])``, in
    random order. Work and memory are O(records_per_client): nothing is sized by the
    number of records or of clients. Different clients' samples overlap.

    Raises:
        PartitionError: ``records_per_client`` below 2 or above ``num_records``, or a
            negative ``partition_id`` or ``seed``.
    """
    _check_int("num_records", num_records, minimum=0)
    _check_int("partition_id", partition_id, minimum=0)
    _check_int("seed", seed, minimum=0)
    if isinstance(records_per_client, bool) or not isinstance(
        records_per_client, (int, np.integer)
    ):
        raise PartitionError(f"records-per-client must be an int, got {records_per_client!r}")
    if records_per_client < 2:
        raise PartitionError(
            f"records-per-client must be >= 2 (a client needs records to train on and to "
            f"validate), got {records_per_client}"
        )
    if records_per_client > num_records:
        raise PartitionError(
            f"records-per-client is {records_per_client} but there are only {num_records} "
            "records to draw from without replacement"
        )
    k, n = int(records_per_client), int(num_records)
    rng = np.random.default_rng([int(seed), int(partition_id)])
    # Floyd's algorithm: for j = n-k .. n-1 draw t uniform in [0, j]; take t unless it
    # was taken already, then take j. Gives a uniform k-subset with k draws.
    draws = rng.integers(0, np.arange(n - k + 1, n + 1, dtype=np.int64))
    chosen: set[int] = set()
    picked = np.empty(k, dtype=np.int64)
    for i, (t, j) in enumerate(zip(draws.tolist(), range(n - k, n))):
        pick = j if t in chosen else t
        chosen.add(pick)
        picked[i] = pick
    return picked[rng.permutation(k)]


def iid_partition(num_records: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    """IID split: a seeded permutation cut into K near-equal contiguous slices."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_records).astype(np.int64)
    return list(np.array_split(perm, num_partitions))


def dirichlet_label_skew(
    labels: np.ndarray,
    num_partitions: int,
    alpha: float,
    seed: int,
    min_partition_size: int,
) -> list[np.ndarray]:
    """Label skew: each class split over clients by Dir(alpha) shares (Hsu et al. 2019).

    Reproduces flwr-datasets' ``DirichletPartitioner(num_partitions, "label", alpha,
    min_partition_size, self_balancing=False, shuffle=True, seed=seed)`` draw for draw.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    concentration = np.full(num_partitions, float(alpha))
    class_indices = [np.flatnonzero(labels == k) for k in np.unique(labels)]
    clients = np.arange(num_partitions)
    smallest = 0
    for _ in range(MAX_DIRICHLET_DRAWS):
        owner_parts: list[np.ndarray] = []
        counts = np.zeros(num_partitions, dtype=np.int64)
        for idx in class_indices:
            shares = rng.dirichlet(concentration)
            cuts = (np.cumsum(shares) * len(idx)).astype(np.int64)[:-1]
            cuts = np.minimum(cuts, len(idx))
            per_client = np.diff(cuts, prepend=0, append=len(idx))
            owner_parts.append(np.repeat(clients, per_client))
            counts += per_client
        smallest = int(counts.min())
        if smallest >= min_partition_size:
            break
    else:
        raise PartitionError(
            f"dirichlet partition (alpha={alpha:g}) could not give all {num_partitions} "
            f"clients at least {min_partition_size} records in {MAX_DIRICHLET_DRAWS} "
            f"draws (smallest client got {smallest}): raise dirichlet-alpha, use fewer "
            "clients or lower min_partition_size"
        )
    owner = np.concatenate(owner_parts)
    records = np.concatenate(class_indices).astype(np.int64)
    # Stable sort keeps, within a client, class order then record order: the order in
    # which DirichletPartitioner extends its per-client lists before shuffling them.
    grouped = records[np.argsort(owner, kind="stable")]
    parts = np.split(grouped, np.cumsum(counts)[:-1])
    for part in parts:
        rng.shuffle(part)
    return parts


def quantity_skew(
    num_records: int,
    num_partitions: int,
    alpha: float,
    seed: int,
    min_partition_size: int,
) -> list[np.ndarray]:
    """Quantity skew: client sizes from Dir(alpha) shares over clients (Li et al. 2022)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_records).astype(np.int64)
    shares = rng.dirichlet(np.full(num_partitions, float(alpha)))
    spare = num_records - num_partitions * min_partition_size
    sizes = min_partition_size + _largest_remainder(shares, spare)
    return list(np.split(perm, np.cumsum(sizes)[:-1]))


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``shares`` that sum to ``total`` (Hamilton's method)."""
    if not np.all(np.isfinite(shares)):
        raise PartitionError("Dirichlet draw produced non-finite shares; raise dirichlet-alpha")
    raw = shares / shares.sum() * total
    base = np.floor(raw).astype(np.int64)
    left = total - int(base.sum())
    if left > 0:
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:left]] += 1
    return base


def split_train_val(
    indices: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's indices into (train, validation) parts.

    The validation part is a seeded random ``round(n * val_fraction)`` records, at
    least 1 when ``val_fraction > 0`` and n >= 2, and at most n - 1 so training keeps
    a record. With ``val_fraction == 0`` or n < 2 the validation part is empty. Use a
    different seed per client (e.g. ``seed + partition_id``).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0):
        raise PartitionError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    _check_int("seed", seed, minimum=0)
    n = len(indices)
    if val_fraction == 0 or n < 2:
        return indices.copy(), indices[:0].copy()
    n_val = min(max(1, math.floor(n * val_fraction + 0.5)), n - 1)
    shuffled = indices[np.random.default_rng(seed).permutation(n)]
    return shuffled[n_val:], shuffled[:n_val]


class Partition(Dataset):
    """One client's records, read by index from tensors shared by all clients.

    ``partition[i]`` is ``(images[indices[i]], labels[indices[i]])`` (views, no copy),
    so it works as a map-style ``torch.utils.data.Dataset`` (including Opacus' Poisson
    ``DPDataLoader``). ``tensors()`` copies out this client's rows only.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray | Sequence[int]
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise PartitionError(
                f"images and labels differ in length: {images.shape[0]} vs {labels.shape[0]}"
            )
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if idx.ndim != 1:
            raise PartitionError(f"indices must be one-dimensional, got shape {tuple(idx.shape)}")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= images.shape[0]):
            raise PartitionError(
                f"partition indices must lie in [0, {images.shape[0]}), "
                f"got [{int(idx.min())}, {int(idx.max())}]"
            )
        self._images = images
        self._labels = labels
        self.indices = idx

    @classmethod
    def of(cls, data: object, indices: np.ndarray | Sequence[int]) -> Partition:
        """The partition of ``data`` (anything with ``images`` and ``labels``, e.g. ImageData)."""
        return cls(data.images, data.labels, indices)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        return self._images[j], self._labels[j]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of this client only, as new tensors."""
        return self._images.index_select(0, self.indices), self._labels.index_select(
            0, self.indices
        )

    def subset(self, positions: np.ndarray | Sequence[int]) -> Partition:
        """A partition of some of this client's records (positions within this partition)."""
        pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        return Partition(self._images, self._labels, self.indices[pos].numpy())

    def split(self, val_fraction: float, seed: int) -> tuple[Partition, Partition]:
        """(train, validation) partitions of this client; see ``split_train_val``."""
        train, val = split_train_val(self.indices.numpy(), val_fraction, seed)
        return (
            Partition(self._images, self._labels, train),
            Partition(self._images, self._labels, val),
        )

    def label_counts(self, num_classes: int) -> np.ndarray:
        """How many of this client's records carry each label, shape (num_classes,)."""
        labels = self._labels.index_select(0, self.indices)
        return np.bincount(labels.numpy(), minlength=num_classes)


def make_partitions(
    data: object,
    num_partitions: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_partition_size: int = 2,
    *,
    dataset_name: str | None = None,
) -> list[Partition]:
    """``partition_indices`` over ``data.labels``, as lazy ``Partition`` views of ``data``."""
    labels = data.labels  # type: ignore[attr-defined]
    labels_np = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    parts = partition_indices(
        labels_np,
        num_partitions,
        scheme=scheme,
        alpha=alpha,
        seed=seed,
        min_partition_size=min_partition_size,
        dataset_name=dataset_name,
    )
    return [Partition.of(data, p) for p in parts]


def _check_int(key: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PartitionError(f"{key} must be an int >= {minimum}, got {value!r}")


def _check_alpha(alpha: object) -> None:
    ok = isinstance(alpha, (int, float, np.floating, np.integer)) and not isinstance(alpha, bool)
    if not ok or not math.isfinite(float(alpha)) or float(alpha) <= 0:  # type: ignore[arg-type]
        shown = f"{alpha:g}" if ok else repr(alpha)  # type: ignore[str-format]
        raise PartitionError(f"dirichlet-alpha must be > 0, got {shown}")
