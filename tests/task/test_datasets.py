"""Dataset loaders: shapes, splits, normalisation, caching and error messages.

Tests marked ``realdata`` read the shared real datasets; the rest build small files in
``tmp_path`` (idx, npz, PNG, CIFAR pickles) so the loaders' logic runs without them.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from task.datasets import (
    CIFAR10_CLASSES,
    DataRootError,
    DatasetSplits,
    ImageData,
    clear_cache,
    load_dataset,
    read_idx,
)

CIFAR_ORDER = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _assert_normalised(splits: DatasetSplits) -> None:
    """Training images have per-channel mean 0 and std 1; stored stats undo it into [0, 1]."""
    train = splits.train
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert splits.test.images.dtype == torch.float32 and splits.test.labels.dtype == torch.int64
    channels = train.shape[0]
    assert len(train.mean) == len(train.std) == channels
    assert splits.test.mean == train.mean and splits.test.std == train.std
    x = train.images.to(torch.float64)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
    assert torch.allclose(std, torch.ones_like(std), atol=1e-3)
    for part in (train, splits.test):
        mean = torch.tensor(part.mean).view(1, -1, 1, 1)
        std = torch.tensor(part.std).view(1, -1, 1, 1)
        raw = part.images.to(torch.float64) * std + mean
        assert raw.min() >= -1e-4 and raw.max() <= 1 + 1e-4


def _pixels(part: ImageData) -> np.ndarray:
    """Undo the normalisation: uint8 pixels (N, C, H, W)."""
    mean = torch.tensor(part.mean).view(1, -1, 1, 1)
    std = torch.tensor(part.std).view(1, -1, 1, 1)
    raw = (part.images.to(torch.float64) * std + mean) * 255.0
    return raw.round().clamp(0, 255).to(torch.uint8).numpy()


# --- digits (bundled with scikit-learn) ---------------------------------------------


def test_digits_shapes_split_and_normalisation() -> None:
    splits = load_dataset("digits")
    assert splits.name == "digits"
    assert (len(splits.train), len(splits.test)) == (1437, 360)
    assert splits.shape == (1, 32, 32) and splits.train.images.shape == (1437, 1, 32, 32)
    assert splits.num_classes == 10 and splits.classes == tuple("0123456789")
    _assert_normalised(splits)
    assert "load_digits" in splits.source


def test_digits_split_is_stratified() -> None:
    splits = load_dataset("digits")
    test_counts = torch.bincount(splits.test.labels, minlength=10)
    total = test_counts + torch.bincount(splits.train.labels, minlength=10)
    assert int(total.sum()) == 1797
    assert torch.all((test_counts.double() - 0.2 * total.double()).abs() <= 1.0)


def test_digits_deterministic_per_seed_and_cached() -> None:
    a = load_dataset("digits", seed=0)
    assert load_dataset("digits", seed=0) is a
    assert load_dataset("digits", data_root="/ignored/for/digits", seed=0) is a
    b = load_dataset("digits", seed=1)
    assert b is not a and len(b.train) == len(a.train)
    assert not torch.equal(a.train.labels, b.train.labels)
    clear_cache()
    c = load_dataset("digits", seed=0)
    assert c is not a
    assert torch.equal(c.train.labels, a.train.labels)
    assert torch.equal(c.train.images, a.train.images)


# --- MNIST idx files ----------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(folder: Path, n: int, prefix: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 digits whose first two pixels encode their index; labels cycle 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    images[:, 5:20, 5:20] = 200
    labels = (np.arange(n) % 10).astype(np.uint8)
    _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return images, labels


def _ids(part: ImageData) -> np.ndarray:
    px = _pixels(part)
    return px[:, 0, 0, 0].astype(np.int64) + 256 * px[:, 0, 0, 1].astype(np.int64)


def test_read_idx_round_trip(tmp_path: Path) -> None:
    images, labels = _fake_mnist(tmp_path, 12)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 3), images)
    assert np.array_equal(read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 1), labels)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + bytes(5),
            "magic number 0x00000801, expected 0x00000803",
        ),
        (bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 28, 28) + bytes(100), "header says shape"),
        (b"\x00\x00", "only 2 bytes"),
    ],
)
def test_read_idx_rejects_malformed_files(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(payload)
    with pytest.raises(DataRootError, match=message) as info:
        read_idx(path, 3)
    assert str(path) in str(info.value)


def test_read_idx_rejects_non_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(DataRootError, match="malformed idx file") as info:
        read_idx(path, 1)
    assert str(path) in str(info.value)


def test_mnist_test_set_only_is_split_80_20(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "mnist", 100)
    _write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    splits = load_dataset("mnist", tmp_path, seed=3)
    assert (len(splits.train), len(splits.test)) == (80, 20)
    assert splits.shape == (1, 28, 28) and splits.classes == tuple("0123456789")
    assert torch.equal(torch.bincount(splits.test.labels, minlength=10), torch.full((10,), 2))
    train_ids, test_ids = _ids(splits.train), _ids(splits.test)
    assert not set(train_ids) & set(test_ids)
    assert sorted(np.concatenate([train_ids, test_ids])) == list(range(100))
    assert np.array_equal(splits.train.labels.numpy(), train_ids % 10)  # labels stay with images
    assert "official test set only" in splits.source
    other = load_dataset("mnist", tmp_path, seed=4)
    assert set(_ids(other.test)) != set(test_ids)


def test_mnist_uses_official_split_when_training_set_present(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "mnist", 30)
    _fake_mnist(tmp_path / "mnist", 60, prefix="train")
    splits = load_dataset("mnist", tmp_path)
    assert (len(splits.train), len(splits.test)) == (60, 30)
    assert list(_ids(splits.train)) == list(range(60))
    assert list(_ids(splits.test)) == list(range(30))
    assert "official train (60) and test (30)" in splits.source


def test_mnist_missing_root_names_path(tmp_path: Path) -> None:
    with pytest.raises(DataRootError) as info:
        load_dataset("mnist", tmp_path / "nowhere")
    message = str(info.value)
    assert f"'{tmp_path / 'nowhere' / 'mnist'}' not found" in message
    assert "t10k-images-idx3-ubyte.gz" in message and "--data-root" in message
    assert "\n" not in message


def test_mnist_missing_file_names_file(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "mnist", 20)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataRootError, match="t10k-labels-idx1-ubyte.gz' not found"):
        load_dataset("mnist", tmp_path)


def test_dataset_needing_files_without_root() -> None:
    with pytest.raises(DataRootError, match="dataset 'mnist' needs a data root"):
        load_dataset("mnist")


# --- MedMNIST npz -------------------------------------------------------------------


def test_medmnist_missing_root_names_path_and_file(tmp_path: Path) -> None:
    with pytest.raises(DataRootError) as info:
        load_dataset("pneumoniamnist", tmp_path)
    message = str(info.value)
    assert message.startswith(f"data root '{tmp_path / 'pneumoniamnist'}' not found")
    assert "pneumoniamnist.npz (MedMNIST v2 npz)" in message
    assert "--data-root pointing at the folder that contains pneumoniamnist/" in message


def test_medmnist_rgb_flag_from_npz(tmp_path: Path) -> None:
    folder = tmp_path / "bloodmnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 8), ("test", 16)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 8).reshape(n, 1).astype(np.uint8)
    np.savez(folder / "bloodmnist.npz", **arrays)
    splits = load_dataset("bloodmnist", tmp_path)
    assert (len(splits.train), len(splits.test)) == (40, 16)
    assert splits.shape == (3, 28, 28) and splits.num_classes == 8
    assert splits.classes[0] == "basophil"
    expected = arrays["test_images"].transpose(0, 3, 1, 2)
    assert np.array_equal(_pixels(splits.test), expected)
    _assert_normalised(splits)


def test_multilabel_medmnist_flag_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'chestmnist' is not supported"):
        load_dataset("chestmnist", tmp_path)


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn': expected one of digits, mnist"):
        load_dataset("svhn")


def test_bad_seed_rejected() -> None:
    with pytest.raises(ValueError, match="seed must be an int"):
        load_dataset("digits", seed=-1)


# --- ImageFolder --------------------------------------------------------------------


def _write_images(
    folder: Path, count: int, mode: str, size: tuple[int, int] = (40, 30), ext: str = "png"
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(count):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels, mode).save(folder / f"{i}.{ext}")


def test_imagefolder_grayscale_pngs(tmp_path: Path) -> None:
    _write_images(tmp_path / "scans" / "benign", 5, "L")
    _write_images(tmp_path / "scans" / "malignant", 5, "L", size=(64, 64))
    splits = load_dataset(f"imagefolder:{tmp_path / 'scans'}")
    assert splits.classes == ("benign", "malignant")
    assert splits.shape == (1, 32, 32)
    assert (len(splits.train), len(splits.test)) == (8, 2)
    assert torch.equal(torch.bincount(splits.test.labels, minlength=2), torch.tensor([1, 1]))
    assert splits.name == f"imagefolder:{(tmp_path / 'scans').resolve()}"
    _assert_normalised(splits)


def test_imagefolder_mixed_modes_become_rgb_and_resize(tmp_path: Path) -> None:
    _write_images(tmp_path / "a", 4, "RGB")
    _write_images(tmp_path / "b", 3, "L")
    _write_images(tmp_path / "b", 2, "RGB", ext="bmp")  # decoded by PIL
    splits = load_dataset("imagefolder:.", tmp_path, image_size=16)
    assert splits.shape == (3, 16, 16)
    assert len(splits.train) + len(splits.test) == 9
    assert "resized to 16x16" in splits.source


def test_imagefolder_keeps_pixels_at_native_size(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    for cls in ("c0", "c1"):
        (folder / cls).mkdir(parents=True)
    pixels = {}
    for i in range(10):
        arr = np.full((32, 32), 10 * i, dtype=np.uint8)
        Image.fromarray(arr, "L").save(folder / f"c{i % 2}" / f"{i}.png")
        pixels[10 * i] = i % 2
    splits = load_dataset(f"imagefolder:{folder}")
    for part in (splits.train, splits.test):
        px = _pixels(part)
        for image, label in zip(px, part.labels.tolist()):
            assert np.all(image == image[0, 0, 0]) and pixels[int(image[0, 0, 0])] == label


def test_imagefolder_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataRootError, match=f"image folder '{tmp_path / 'absent'}' not found"):
        load_dataset(f"imagefolder:{tmp_path / 'absent'}")


def test_imagefolder_without_class_folders(tmp_path: Path) -> None:
    Image.new("L", (32, 32)).save(tmp_path / "loose.png")
    with pytest.raises(DataRootError, match="unusable: expected one sub-folder per class"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_imagefolder_needs_a_path() -> None:
    with pytest.raises(ValueError, match="imagefolder: needs a path"):
        load_dataset("imagefolder:")


# --- CIFAR-10 -----------------------------------------------------------------------


def test_cifar10_missing_root_names_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataRootError) as info:
        load_dataset("cifar10", tmp_path)
    message = str(info.value)
    assert f"'{tmp_path}'" in message and "cifar10/test/<class>/*.jpg" in message
    assert "cifar-10-batches-py" in message


def test_cifar10_official_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cifar-10-batches-py layout (md5 checks patched out for the tiny fake batches)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 6)]:
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": [i % 10 for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR_ORDER)}))
    splits = load_dataset("cifar10", tmp_path)
    assert (len(splits.train), len(splits.test)) == (20, 6)
    assert splits.shape == (3, 32, 32) and splits.classes == CIFAR_ORDER
    expected = pickle.loads((folder / "test_batch").read_bytes())["data"].reshape(6, 3, 32, 32)
    assert np.array_equal(_pixels(splits.test), expected)


def test_image_data_validates() -> None:
    with pytest.raises(ValueError, match="images must be float32"):
        ImageData(
            torch.zeros(2, 1, 4, 4, dtype=torch.float64),
            torch.zeros(2, dtype=torch.int64),
            ("a",),
            (0.0,),
            (1.0,),
        )
    with pytest.raises(ValueError, match="labels must lie in"):
        ImageData(torch.zeros(2, 1, 4, 4), torch.tensor([0, 3]), ("a", "b"), (0.0,), (1.0,))
    assert issubclass(DataRootError, ValueError)


# --- real data ----------------------------------------------------------------------


@pytest.mark.realdata
def test_pneumoniamnist_real(data_root: Path) -> None:
    splits = load_dataset("pneumoniamnist", data_root)
    assert (len(splits.train), len(splits.test)) == (4708, 624)
    assert splits.shape == (1, 28, 28)
    assert splits.classes == ("normal", "pneumonia") and splits.num_classes == 2
    assert set(splits.train.labels.tolist()) == {0, 1}
    assert str(data_root / "pneumoniamnist" / "pneumoniamnist.npz") in splits.source
    _assert_normalised(splits)
    assert load_dataset("pneumoniamnist", data_root, seed=5) is splits  # official split: seed-free


@pytest.mark.realdata
def test_mnist_real(data_root: Path) -> None:
    splits = load_dataset("mnist", data_root)
    assert (len(splits.train), len(splits.test)) == (8000, 2000)
    assert splits.shape == (1, 28, 28) and splits.num_classes == 10
    official = read_idx(data_root / "mnist" / "t10k-labels-idx1-ubyte.gz", 1)
    pooled = torch.bincount(torch.cat([splits.train.labels, splits.test.labels]), minlength=10)
    assert pooled.tolist() == np.bincount(official, minlength=10).tolist()
    test_counts = torch.bincount(splits.test.labels, minlength=10).double()
    assert torch.all((test_counts - 0.2 * pooled.double()).abs() <= 1.0)
    _assert_normalised(splits)


@pytest.fixture(scope="module")
def cifar(data_root: Path) -> DatasetSplits:
    return load_dataset("cifar10", data_root)


@pytest.mark.realdata
def test_cifar10_imagefolder_real(cifar: DatasetSplits, data_root: Path) -> None:
    assert (len(cifar.train), len(cifar.test)) == (8000, 2000)
    assert cifar.shape == (3, 32, 32)
    assert cifar.classes == CIFAR_ORDER == CIFAR10_CLASSES
    assert torch.bincount(cifar.test.labels, minlength=10).tolist() == [200] * 10
    assert str(data_root / "cifar10" / "test") in cifar.source
    _assert_normalised(cifar)


@pytest.mark.realdata
def test_cifar10_pixels_match_the_jpeg(cifar: DatasetSplits, data_root: Path) -> None:
    """Spot-check decoding: some image in the split equals PIL's decoding of one file."""
    path = sorted((data_root / "cifar10" / "test" / "ship").iterdir())[0]
    with Image.open(path) as im:
        reference = np.asarray(im.convert("RGB")).transpose(2, 0, 1).astype(np.int16)
    ship = CIFAR_ORDER.index("ship")
    candidates = [
        px
        for part in (cifar.train, cifar.test)
        for px, y in zip(_pixels(part), part.labels.tolist())
        if y == ship
    ]
    best = min(np.abs(px.astype(np.int16) - reference).max() for px in candidates)
    assert best <= 1
