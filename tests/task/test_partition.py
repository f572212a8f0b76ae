"""Partitioning: coverage, determinism, skew, flwr-datasets equivalence, errors, views."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from task.partition import (
    PARTITION_SCHEMES,
    Partition,
    PartitionError,
    make_partitions,
    partition_indices,
    sampled_indices,
    split_train_val,
)


def _labels(n: int = 2000, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert joined.dtype == np.int64
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))


def _label_skew(parts: list[np.ndarray], labels: np.ndarray, classes: int = 10) -> float:
    """Mean total-variation distance between each client's label mix and the global one."""
    overall = np.bincount(labels, minlength=classes) / len(labels)
    dists = []
    for part in parts:
        mix = np.bincount(labels[part], minlength=classes) / len(part)
        dists.append(0.5 * np.abs(mix - overall).sum())
    return float(np.mean(dists))


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
@pytest.mark.parametrize("num_partitions", [1, 7, 100])
def test_partitions_are_disjoint_and_cover_everything(scheme: str, num_partitions: int) -> None:
    labels = _labels()
    parts = partition_indices(labels, num_partitions, scheme=scheme, alpha=1.0, seed=3)
    assert len(parts) == num_partitions
    assert min(len(p) for p in parts) >= 2
    _assert_exact_cover(parts, len(labels))


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_deterministic_per_seed_and_different_across_seeds(scheme: str) -> None:
    labels = _labels()
    a = partition_indices(labels, 10, scheme=scheme, seed=1)
    b = partition_indices(labels, 10, scheme=scheme, seed=1)
    c = partition_indices(labels, 10, scheme=scheme, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_differ_by_at_most_one_and_mix_labels() -> None:
    labels = np.sort(_labels(1003))  # sorted labels: IID must still shuffle
    parts = partition_indices(labels, 10, scheme="iid")
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 1003
    assert _label_skew(parts, labels) < 0.2  # sampling noise only; contiguous slices give ~0.9


def test_dirichlet_small_alpha_is_more_skewed_than_large_alpha() -> None:
    labels = _labels(5000)
    skew = {
        alpha: _label_skew(partition_indices(labels, 10, "dirichlet", alpha=alpha, seed=0), labels)
        for alpha in (0.1, 1.0, 100.0)
    }
    assert skew[0.1] > skew[1.0] > skew[100.0]
    assert skew[0.1] > 0.5 and skew[100.0] < 0.05


def test_quantity_skew_gives_unequal_sizes_with_iid_labels() -> None:
    labels = _labels(5000)
    parts = partition_indices(labels, 10, "quantity", alpha=0.5, seed=0, min_partition_size=5)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 5 and sizes.sum() == 5000
    assert sizes.max() >= 3 * sizes.min()
    big = [p for p in parts if len(p) >= 200]
    assert big and _label_skew(big, labels) < 0.1  # labels not skewed, only amounts
    near_equal = np.array([len(p) for p in partition_indices(labels, 10, "quantity", alpha=1e4)])
    assert near_equal.max() - near_equal.min() < 0.1 * near_equal.mean()


def test_quantity_tiny_alpha_still_honours_minimum() -> None:
    labels = _labels(300)
    parts = partition_indices(labels, 100, "quantity", alpha=0.01, seed=0, min_partition_size=3)
    assert min(len(p) for p in parts) == 3
    _assert_exact_cover(parts, 300)


# --- equivalence with flwr-datasets ------------------------------------------------


@pytest.fixture(scope="module")
def flwr() -> object:
    datasets = pytest.importorskip("datasets")
    partitioner = pytest.importorskip("flwr_datasets.partitioner")
    return datasets, partitioner


def _hf(datasets: object, labels: np.ndarray, order: np.ndarray) -> object:
    columns = {"label": labels[order], "idx": order}
    return datasets.Dataset.from_dict(columns)  # type: ignore[attr-defined]


def _idx(partition: object) -> np.ndarray:
    return np.asarray(partition.with_format("numpy")["idx"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", [0, 5])
def test_iid_matches_flwr_iid_partitioner(flwr: tuple, seed: int) -> None:
    datasets, partitioner = flwr
    labels = _labels(1001)
    ours = partition_indices(labels, 13, "iid", seed=seed)
    perm = np.random.default_rng(seed).permutation(len(labels))
    ref = partitioner.IidPartitioner(num_partitions=13)
    ref.dataset = _hf(datasets, labels, perm)
    for i, part in enumerate(ours):
        assert np.array_equal(part, _idx(ref.load_partition(i)))


@pytest.mark.parametrize(("alpha", "seed"), [(0.1, 0), (0.5, 1), (5.0, 7)])
def test_dirichlet_matches_flwr_dirichlet_partitioner(flwr: tuple, alpha: float, seed: int) -> None:
    datasets, partitioner = flwr
    labels = _labels(1500)
    ours = partition_indices(labels, 12, "dirichlet", alpha=alpha, seed=seed, min_partition_size=2)
    ref = partitioner.DirichletPartitioner(
        num_partitions=12, partition_by="label", alpha=alpha, min_partition_size=2,
        self_balancing=False, shuffle=True, seed=seed,
    )  # fmt: skip
    ref.dataset = _hf(datasets, labels, np.arange(len(labels)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flwr warns on each re-draw
        for i, part in enumerate(ours):
            assert np.array_equal(part, _idx(ref.load_partition(i)))


def test_quantity_matches_flwr_size_partitioner(flwr: tuple) -> None:
    datasets, partitioner = flwr
    labels = _labels(800)
    ours = partition_indices(labels, 9, "quantity", alpha=0.5, seed=4)
    perm = np.random.default_rng(4).permutation(len(labels))
    ref = partitioner.SizePartitioner([len(p) for p in ours])
    ref.dataset = _hf(datasets, labels, perm)
    for i, part in enumerate(ours):
        assert np.array_equal(part, _idx(ref.load_partition(i)))


# --- scale -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "clients", "alpha"),
    [("iid", 10_000, 0.5), ("quantity", 10_000, 0.5), ("dirichlet", 2_000, 100.0)],
)
def test_scales_to_thousands_of_clients(scheme: str, clients: int, alpha: float) -> None:
    labels = _labels(60_000)
    start = time.perf_counter()
    parts = partition_indices(labels, clients, scheme, alpha=alpha, seed=0, min_partition_size=2)
    assert time.perf_counter() - start < 5.0  # milliseconds in practice
    assert len(parts) == clients
    _assert_exact_cover(parts, 60_000)


# --- errors ------------------------------------------------------------------------


def test_too_many_clients_message() -> None:
    with pytest.raises(PartitionError) as info:
        partition_indices(_labels(1437), 800, dataset_name="digits")
    assert str(info.value) == (
        "800 clients but dataset 'digits' has 1437 training records: "
        "at most 718 clients with at least 2 records each"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_partitions": 0}, "num_partitions must be an int >= 1, got 0"),
        (
            {"num_partitions": 5, "scheme": "dirichlet", "alpha": -1},
            "dirichlet-alpha must be > 0, got -1",
        ),
        (
            {"num_partitions": 5, "scheme": "quantity", "alpha": 0.0},
            "dirichlet-alpha must be > 0, got 0",
        ),
        (
            {"num_partitions": 5, "scheme": "dirichlet", "alpha": float("nan")},
            "dirichlet-alpha must be > 0, got nan",
        ),
        (
            {"num_partitions": 5, "scheme": "shards"},
            "unknown partition scheme 'shards': expected one of 'iid', 'dirichlet', 'quantity'",
        ),
        (
            {"num_partitions": 5, "min_partition_size": 0},
            "min_partition_size must be an int >= 1, got 0",
        ),
        ({"num_partitions": 5, "seed": -3}, "seed must be an int >= 0, got -3"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(PartitionError) as info:
        partition_indices(_labels(100), **kwargs)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_alpha_is_ignored_by_iid() -> None:
    assert len(partition_indices(_labels(100), 5, "iid", alpha=-1)) == 5


def test_dirichlet_that_cannot_meet_minimum() -> None:
    message = r"could not give all 40 clients at least 2 records in 11 draws"
    with pytest.raises(PartitionError, match=message):
        partition_indices(_labels(100), 40, "dirichlet", alpha=0.05, min_partition_size=2)


def test_labels_must_be_one_dimensional() -> None:
    with pytest.raises(PartitionError, match="labels must be one-dimensional"):
        partition_indices(np.zeros((10, 2)), 2)


# --- local validation split -------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [(100, 0.1, 10), (2, 0.1, 1), (5, 0.01, 1), (3, 0.9, 2), (1, 0.5, 0), (50, 0.0, 0)],
)
def test_split_train_val_sizes(n: int, fraction: float, n_val: int) -> None:
    indices = np.arange(1000, 1000 + n)
    train, val = split_train_val(indices, fraction, seed=0)
    assert len(val) == n_val and len(train) == n - n_val
    assert np.array_equal(np.sort(np.concatenate([train, val])), indices)


def test_split_train_val_deterministic_per_seed() -> None:
    indices = np.arange(200)
    a = split_train_val(indices, 0.2, seed=1)
    b = split_train_val(indices, 0.2, seed=1)
    c = split_train_val(indices, 0.2, seed=2)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2])
def test_split_train_val_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(PartitionError, match=r"val_fraction must be in \[0, 1\)"):
        split_train_val(np.arange(10), fraction, seed=0)


# --- lazy client view --------------------------------------------------------------


class _Data:
    def __init__(self, n: int = 50) -> None:
        self.images = torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2)
        self.labels = torch.arange(n) % 3


def test_partition_indexes_shared_tensors_without_copying() -> None:
    data = _Data()
    part = Partition.of(data, np.array([7, 3, 42]))
    assert len(part) == 3
    image, label = part[2]
    assert torch.equal(image, data.images[42]) and int(label) == 42 % 3
    assert image.untyped_storage().data_ptr() == data.images.untyped_storage().data_ptr()
    images, labels = part.tensors()
    assert images.shape == (3, 1, 2, 2) and torch.equal(labels, data.labels[[7, 3, 42]])
    assert part.label_counts(3).tolist() == [2, 1, 0]


def test_partition_split_and_loader() -> None:
    data = _Data(40)
    part = Partition.of(data, np.arange(0, 40, 2))
    train, val = part.split(0.25, seed=0)
    assert (len(train), len(val)) == (15, 5)
    assert not set(train.indices.tolist()) & set(val.indices.tolist())
    batch_images, batch_labels = next(iter(DataLoader(train, batch_size=4)))
    assert batch_images.shape == (4, 1, 2, 2) and batch_labels.shape == (4,)


def test_partition_with_opacus_poisson_loader() -> None:
    from opacus.data_loader import DPDataLoader

    part = Partition.of(_Data(64), np.arange(64))
    generator = torch.Generator().manual_seed(0)
    loader = DPDataLoader.from_data_loader(DataLoader(part, batch_size=16), generator=generator)
    seen = sum(len(labels) for _, labels in loader)
    assert 0 < seen < 64 * 3


def test_partition_rejects_out_of_range_indices() -> None:
    with pytest.raises(PartitionError, match=r"indices must lie in \[0, 50\)"):
        Partition.of(_Data(), np.array([0, 50]))


def test_make_partitions_over_image_data() -> None:
    data = _Data(60)
    parts = make_partitions(data, 4, scheme="iid", seed=0)
    assert [len(p) for p in parts] == [15, 15, 15, 15]
    _assert_exact_cover([p.indices.numpy() for p in parts], 60)


# --- sampled: independent per-client samples (not a partition) --------------------------


def test_sampled_is_deterministic_per_seed_and_partition_id() -> None:
    a = sampled_indices(1000, 16, partition_id=7, seed=3)
    assert np.array_equal(a, sampled_indices(1000, 16, partition_id=7, seed=3))
    assert not np.array_equal(a, sampled_indices(1000, 16, partition_id=7, seed=4))
    # exactly the stream the docstring names: default_rng([seed, partition_id])
    assert np.array_equal(a, sampled_indices(1000, 16, partition_id=7, seed=np.int64(3)))


def test_sampled_gives_distinct_in_range_records_of_the_requested_size() -> None:
    for pid in range(200):
        idx = sampled_indices(50, 16, partition_id=pid, seed=0)
        assert idx.dtype == np.int64 and idx.shape == (16,)
        assert len(np.unique(idx)) == 16
        assert idx.min() >= 0 and idx.max() < 50
    everything = sampled_indices(20, 20, partition_id=1, seed=0)  # k == N: a permutation
    assert np.array_equal(np.sort(everything), np.arange(20))


def test_sampled_clients_differ_and_overlap() -> None:
    samples = [set(sampled_indices(8000, 16, partition_id=pid, seed=42).tolist())
               for pid in range(1000)]
    assert len({frozenset(s) for s in samples}) == 1000
    # Drawn independently, so records are shared: 16,000 draws from 8,000 records.
    assert len(set().union(*samples)) < 16_000


def test_sampled_is_uniform_over_subsets() -> None:
    """Every 3-subset of 5 records is equally likely (Floyd's algorithm, unbiased)."""
    counts: dict[tuple[int, ...], int] = {}
    draws = 4000
    for pid in range(draws):
        key = tuple(sorted(sampled_indices(5, 3, partition_id=pid, seed=1).tolist()))
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 10
    expected = draws / 10  # sd ~ 19
    assert all(abs(c - expected) < 100 for c in counts.values()), counts
    # and the order within a client is random too: first position is any of the 3
    firsts = np.bincount([sampled_indices(5, 3, pid, 1)[0] for pid in range(2000)],
                         minlength=5)
    assert all(abs(f - 400) < 100 for f in firsts), firsts


def test_sampled_work_and_memory_do_not_grow_with_population_or_records() -> None:
    """Client 9,999 of 10,000 (or of 10^15), from 10^12 records: nothing that size is
    built; the draw allocates a few KiB and takes well under a second."""
    import tracemalloc

    tracemalloc.start()
    try:
        start = time.perf_counter()
        for pid in (9_999, 10**15):
            idx = sampled_indices(10**12, 16, partition_id=pid, seed=42)
            assert len(np.unique(idx)) == 16 and idx.max() < 10**12
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, peak
    assert elapsed < 1.0, elapsed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 11, 0, 0), "records-per-client is 11 but there are only 10 records"),
        ((10, 1, 0, 0), "records-per-client must be >= 2"),
        ((10, 0, 0, 0), "records-per-client must be >= 2"),
        ((10, 4, -1, 0), "partition_id must be an int >= 0"),
        ((10, 4, 0, -2), "seed must be an int >= 0"),
        ((10, 2.5, 0, 0), "records-per-client must be an int"),
    ],
)
def test_sampled_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(PartitionError, match=message):
        sampled_indices(*args)


def test_sampled_is_not_a_disjoint_scheme() -> None:
    assert "sampled" not in PARTITION_SCHEMES
    with pytest.raises(PartitionError, match="unknown partition scheme 'sampled'"):
        partition_indices(_labels(), 4, scheme="sampled")
