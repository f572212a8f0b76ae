"""Image datasets as in-memory tensors, read from local files (no download in tests).

``load_dataset(name, data_root, seed)`` returns a ``DatasetSplits`` of two ``ImageData``:
float32 images (N, C, H, W), scaled to [0, 1] and then normalised per channel with the
mean and standard deviation of the *training* split (applied to both splits), and int64
labels. Names:

``digits``
    scikit-learn's bundled 8x8 digits (1,797 images, no file needed), upsampled
    bilinearly to 1x32x32; stratified 80/20 train/test split by ``seed`` (1,437/360).
``pneumoniamnist``, or any other 2D single-label MedMNIST flag (``bloodmnist`` ...)
    ``<data_root>/<flag>/<flag>.npz`` (MedMNIST v2, 28x28) read with the ``medmnist``
    package's own class. Train = the official train split, test = the official test
    split; the official validation split is not used (clients carve their own
    validation part out of their training partition). 1x28x28 or 3x28x28.
``mnist``
    gzipped idx files in ``<data_root>/mnist/``. With the full training set
    (``train-images-idx3-ubyte.gz`` and ``train-labels-idx1-ubyte.gz``) the official
    60,000/10,000 split; otherwise the 10,000 official test digits
    (``t10k-*-ubyte.gz``) split 8,000/2,000, stratified by ``seed``. 1x28x28.
``cifar10``
    ``<data_root>/cifar10/test/<class>/*.jpg`` (the CIFAR-10 test set as an ImageFolder)
    split 8,000/2,000 stratified by ``seed``; else ``<data_root>/cifar-10-batches-py``
    (or ``<data_root>/cifar10/cifar-10-batches-py``) with the official 50,000/10,000
    split; with ``data_root=None`` torchvision downloads the official set into
    ``$FEDSHIELD_CACHE`` (default ``~/.cache/fedshield``). 3x32x32.
``imagefolder:<path>``
    any folder with one sub-folder of images per class (torchvision's ImageFolder
    layout), e.g. a hospital's own images. A relative path is taken under
    ``data_root`` when one is given. Every image is resized (squashed, bilinear with
    antialiasing) to ``image_size`` x ``image_size`` (default 32); 1 channel when every
    image is grayscale (PIL mode 1, L, LA or 16-bit I), else RGB (grayscale images
    repeated, alpha dropped, palettes expanded);
    stratified 80/20 split by ``seed``.

Decoded datasets are cached per process (on name, resolved root, seed and image size)
because many simulated clients in one process load the same data. The returned tensors
are shared between all callers: never modify them in place; index them (see
``task.partition.Partition``) or copy them first.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from task.feature_cache import shared_arrays

__all__ = [
    "CIFAR10_CLASSES",
    "BUILTIN_DATASETS",
    "DataRootError",
    "DatasetSplits",
    "ImageData",
    "clear_cache",
    "load_dataset",
    "read_idx",
]

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist", "cifar10", "pneumoniamnist")
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGEFOLDER_PREFIX = "imagefolder:"
DEFAULT_IMAGE_SIZE = 32
TEST_FRACTION = 0.2  # of the pooled records, where a dataset has no official split

_DIGIT_CLASSES = tuple(str(d) for d in range(10))
_MNIST_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
_IDX_UBYTE = 0x08


class DataRootError(ValueError):
    """A data file or folder is missing or unreadable; the message names the path."""


@dataclass(frozen=True, eq=False)
class ImageData:
    """Images and labels of one split, in memory.

    Attributes:
        images: float32 (N, C, H, W), normalised per channel with ``mean``/``std``.
        labels: int64 (N,), values in ``[0, num_classes)``.
        classes: class names; label i is ``classes[i]``.
        mean: per-channel mean of the training split on the [0, 1] scale.
        std: per-channel standard deviation of the training split on the [0, 1] scale.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != torch.float32:
            raise ValueError(
                f"images must be float32 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.ndim != 1 or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"{self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need {channels} values, one per channel")
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise ValueError(f"labels must lie in [0, {len(self.classes)})")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """A dataset's training and test splits and where they came from."""

    name: str
    train: ImageData
    test: ImageData
    source: str

    def __post_init__(self) -> None:
        if self.train.shape != self.test.shape or self.train.classes != self.test.classes:
            raise ValueError(
                f"dataset {self.name!r}: train and test differ in image shape or classes"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


def load_dataset(
    name: str,
    data_root: str | Path | None = None,
    seed: int = 0,
    *,
    image_size: int | None = None,
) -> DatasetSplits:
    """Load a dataset's train and test splits (see the module docstring for names).

    Args:
        name: ``digits``, ``mnist``, ``cifar10``, ``pneumoniamnist`` or another 2D
            MedMNIST flag, or ``imagefolder:<path>``.
        data_root: the folder holding ``mnist/``, ``cifar10/``, ``<medmnist flag>/``;
            not needed for ``digits``; ``None`` or ``""`` for none.
        seed: seeds the stratified split of datasets without an official one.
        image_size: side length for ``imagefolder:`` datasets (default 32); ignored
            by the others.

    Returns:
        The cached ``DatasetSplits``; do not modify its tensors in place.

    Raises:
        DataRootError: a needed folder or file is missing or malformed.
        ValueError: unknown dataset name or bad argument.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    seed = int(seed)
    name = name.strip()
    root = _resolve(data_root) if data_root not in (None, "") else None
    if name.lower().startswith(IMAGEFOLDER_PREFIX):
        size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        folder = _imagefolder_path(name[len(IMAGEFOLDER_PREFIX) :], root)
        return _load_cached(IMAGEFOLDER_PREFIX + folder, None, seed, size)
    key = name.lower()
    if key == "digits":
        return _load_cached(key, None, seed, None)
    if key in ("mnist", "cifar10"):
        return _load_cached(key, root, seed, None)
    if _is_medmnist_flag(key):
        return _load_cached(key, root, 0, None)  # official split: the seed plays no part
    raise ValueError(
        f"unknown dataset {name!r}: expected one of {', '.join(BUILTIN_DATASETS)}, "
        "another 2D MedMNIST flag (e.g. bloodmnist) or imagefolder:<path>"
    )


def clear_cache() -> None:
    """Forget every dataset decoded in this process."""
    _load_cached.cache_clear()


#: Bumped whenever a loader's output changes, so that no process maps an older decoding.
_DECODING_VERSION = 1


@functools.lru_cache(maxsize=8)
def _load_cached(
    name: str, root: Path | None, seed: int, image_size: int | None
) -> DatasetSplits:
    """The decoded dataset: decoded here, or mapped from the simulation's shared folder
    when another of its processes decoded it already (:func:`task.feature_cache.shared_arrays`)."""
    key = f"dataset|v{_DECODING_VERSION}|{name}|{root}|{seed}|{image_size}"
    decode = functools.partial(_load_splits, name, root, seed, image_size)
    arrays, meta = shared_arrays(key, lambda: _as_arrays(decode()))
    return _from_arrays(arrays, meta)


def _as_arrays(splits: DatasetSplits) -> tuple[dict[str, np.ndarray], dict]:
    arrays = {f"{part}_{field}": getattr(getattr(splits, part), field).numpy()
              for part in ("train", "test") for field in ("images", "labels")}
    meta = {"name": splits.name, "source": splits.source, "classes": list(splits.classes),
            **{f"{part}_{stat}": list(getattr(getattr(splits, part), stat))
               for part in ("train", "test") for stat in ("mean", "std")}}
    return arrays, meta


def _from_arrays(arrays: dict[str, np.ndarray], meta: dict) -> DatasetSplits:
    def split(part: str) -> ImageData:
        return ImageData(
            images=torch.from_numpy(arrays[f"{part}_images"]),
            labels=torch.from_numpy(arrays[f"{part}_labels"]),
            classes=tuple(meta["classes"]),
            mean=tuple(meta[f"{part}_mean"]),
            std=tuple(meta[f"{part}_std"]),
        )

    return DatasetSplits(meta["name"], split("train"), split("test"), meta["source"])


def _load_splits(
    name: str, root: Path | None, seed: int, image_size: int | None
) -> DatasetSplits:
    if name == "digits":
        return _load_digits(seed)
    if name == "mnist":
        return _load_mnist(_require_root(name, root), seed)
    if name == "cifar10":
        return _load_cifar10(root, seed)
    if name.startswith(IMAGEFOLDER_PREFIX):
        assert image_size is not None
        return _load_imagefolder(Path(name[len(IMAGEFOLDER_PREFIX) :]), seed, image_size)
    return _load_medmnist(name, _require_root(name, root))


# --- digits -----------------------------------------------------------------------


def _load_digits(seed: int) -> DatasetSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = torch.nn.functional.interpolate(
        images, size=(32, 32), mode="bilinear", align_corners=False
    )
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = _stratified_split(labels, TEST_FRACTION, seed, "digits")
    train, test = _normalised_pair(
        images[torch.from_numpy(train_idx)],
        labels[train_idx],
        images[torch.from_numpy(test_idx)],
        labels[test_idx],
        _DIGIT_CLASSES,
    )
    source = (
        f"scikit-learn load_digits (8x8, upsampled to 32x32): {len(train)}/{len(test)} "
        f"stratified split, seed {seed}"
    )
    return DatasetSplits("digits", train, test, source)


# --- MedMNIST ---------------------------------------------------------------------


def _is_medmnist_flag(name: str) -> bool:
    if name == "pneumoniamnist":
        return True
    if "mnist" not in name or name == "mnist":
        return False
    import medmnist  # slow import (pulls in sklearn.metrics): only when needed

    return name in medmnist.INFO


def _load_medmnist(flag: str, root: Path) -> DatasetSplits:
    import medmnist

    info = medmnist.INFO[flag]
    if flag.endswith("3d") or "multi-label" in info["task"]:
        raise ValueError(
            f"MedMNIST {flag!r} is not supported: only 2D single-label flags "
            f"(its task is {info['task']!r})"
        )
    folder = root / flag
    _require_files(folder, (f"{flag}.npz",), "MedMNIST v2 npz", flag)
    cls = getattr(medmnist, info["python_class"])
    try:
        parts = [
            cls(split=split, root=str(folder), download=False, size=28)
            for split in ("train", "test")
        ]
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise DataRootError(
            f"cannot read {folder / f'{flag}.npz'} as MedMNIST v2 npz: {err}"
        ) from err
    classes = tuple(info["label"][str(i)] for i in range(len(info["label"])))
    arrays = []
    for part in parts:
        imgs = np.asarray(part.imgs)
        imgs = imgs[:, None] if imgs.ndim == 3 else imgs.transpose(0, 3, 1, 2)
        arrays.append((imgs, np.asarray(part.labels).reshape(-1).astype(np.int64)))
    (tr_x, tr_y), (te_x, te_y) = arrays
    train, test = _normalised_pair(
        _uint8_to_unit(tr_x), tr_y, _uint8_to_unit(te_x), te_y, classes
    )
    source = (
        f"MedMNIST v2 {flag} (28x28) from {folder / f'{flag}.npz'}: official train "
        f"({len(train)}) and test ({len(test)}) splits, validation split unused"
    )
    return DatasetSplits(flag, train, test, source)


# --- MNIST ------------------------------------------------------------------------


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read a (gzipped) idx file of unsigned bytes with ``ndim`` dimensions.

    The idx header is two zero bytes, a type byte (0x08: unsigned byte), a byte with
    the number of dimensions, then one big-endian uint32 per dimension; the payload
    follows. The images files have magic 0x00000803 (ndim 3), labels 0x00000801.

    Raises:
        DataRootError: the file is missing, not gzip, or its header or length is wrong.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError as err:
        raise DataRootError(f"idx file '{path}' not found") from err
    except (OSError, EOFError) as err:
        raise DataRootError(f"malformed idx file '{path}': {err}") from err
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataRootError(f"malformed idx file '{path}': only {len(data)} bytes")
    if tuple(data[:4]) != (0, 0, _IDX_UBYTE, ndim):
        magic = int.from_bytes(data[:4], "big")
        raise DataRootError(
            f"malformed idx file '{path}': magic number {magic:#010x}, expected "
            f"{(_IDX_UBYTE << 8) | ndim:#010x}"
        )
    if len(data) < header:
        raise DataRootError(f"malformed idx file '{path}': header cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(shape):
        raise DataRootError(
            f"malformed idx file '{path}': header says shape {shape} "
            f"({math.prod(shape)} bytes) but {len(data) - header} bytes follow"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_mnist_pair(
    folder: Path, images_file: str, labels_file: str
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(folder / images_file, 3)
    labels = read_idx(folder / labels_file, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataRootError(
            f"malformed MNIST files in '{folder}': {images.shape[0]} images in "
            f"{images_file} but {labels.shape[0]} labels in {labels_file}"
        )
    if labels.size and labels.max() > 9:
        raise DataRootError(f"malformed idx file '{folder / labels_file}': label > 9")
    return images, labels.astype(np.int64)


def _load_mnist(root: Path, seed: int) -> DatasetSplits:
    folder = root / "mnist"
    _require_files(folder, _MNIST_TEST, "MNIST idx, gzipped", "mnist")
    test_x, test_y = _read_mnist_pair(folder, *_MNIST_TEST)
    if all((folder / f).is_file() for f in _MNIST_TRAIN):
        train_x, train_y = _read_mnist_pair(folder, *_MNIST_TRAIN)
        how = f"official train ({len(train_y)}) and test ({len(test_y)}) splits"
    else:
        pixels, labels = test_x, test_y
        train_idx, test_idx = _stratified_split(labels, TEST_FRACTION, seed, "mnist")
        train_x, train_y = pixels[train_idx], labels[train_idx]
        test_x, test_y = pixels[test_idx], labels[test_idx]
        how = (
            f"official test set only, split {len(train_idx)}/{len(test_idx)} "
            f"stratified, seed {seed}"
        )
    train, test = _normalised_pair(
        _uint8_to_unit(train_x[:, None]),
        train_y,
        _uint8_to_unit(test_x[:, None]),
        test_y,
        _DIGIT_CLASSES,
    )
    return DatasetSplits("mnist", train, test, f"MNIST idx files in {folder}: {how}")


# --- CIFAR-10 ---------------------------------------------------------------------


def _load_cifar10(root: Path | None, seed: int) -> DatasetSplits:
    if root is None:
        cache = Path(os.environ.get("FEDSHIELD_CACHE", Path.home() / ".cache" / "fedshield"))
        return _load_cifar10_batches(cache.expanduser(), download=True)
    image_folder = root / "cifar10" / "test"
    if image_folder.is_dir():
        return _load_cifar10_imagefolder(image_folder, seed)
    for parent in (root, root / "cifar10"):
        if (parent / "cifar-10-batches-py").is_dir():
            return _load_cifar10_batches(parent, download=False)
    raise DataRootError(
        f"data root '{root}' has no CIFAR-10: expected cifar10/test/<class>/*.jpg "
        "(ImageFolder) or cifar-10-batches-py/ (official python pickles) — pass "
        "--data-root pointing at the folder that contains cifar10/"
    )


def _load_cifar10_imagefolder(folder: Path, seed: int) -> DatasetSplits:
    classes, pixels, labels = _read_image_folder(folder, 32, channels=3)
    if classes != CIFAR10_CLASSES:
        raise DataRootError(
            f"'{folder}' does not hold the CIFAR-10 class folders: expected "
            f"{', '.join(CIFAR10_CLASSES)}, found {', '.join(classes)}"
        )
    train_idx, test_idx = _stratified_split(labels, TEST_FRACTION, seed, "cifar10")
    train, test = _split_pixels(pixels, labels, train_idx, test_idx, CIFAR10_CLASSES)
    source = (
        f"CIFAR-10 test set as ImageFolder at {folder}: {len(labels)} images split "
        f"{len(train)}/{len(test)} stratified, seed {seed}"
    )
    return DatasetSplits("cifar10", train, test, source)


def _load_cifar10_batches(root: Path, download: bool) -> DatasetSplits:
    from torchvision.datasets import CIFAR10

    try:
        parts = [CIFAR10(str(root), train=t, download=download) for t in (True, False)]
    except (RuntimeError, OSError) as err:  # "Dataset not found or corrupted.", no network
        what = "download CIFAR-10 into" if download else "read CIFAR-10 pickles in"
        raise DataRootError(
            f"cannot {what} '{root / 'cifar-10-batches-py'}': {err} — pass --data-root "
            "pointing at the folder that contains cifar10/"
        ) from err
    (tr_x, tr_y), (te_x, te_y) = [
        (np.asarray(p.data).transpose(0, 3, 1, 2), np.asarray(p.targets, dtype=np.int64))
        for p in parts
    ]
    classes = tuple(parts[0].classes)  # from batches.meta: CIFAR10_CLASSES
    train, test = _normalised_pair(
        _uint8_to_unit(tr_x), tr_y, _uint8_to_unit(te_x), te_y, classes
    )
    source = (
        f"CIFAR-10 python pickles in {root / 'cifar-10-batches-py'}: official train "
        f"({len(train)}) and test ({len(test)}) splits"
    )
    return DatasetSplits("cifar10", train, test, source)


# --- any ImageFolder --------------------------------------------------------------


def _imagefolder_path(spec: str, root: Path | None) -> str:
    spec = spec.strip()
    if not spec:
        raise ValueError("imagefolder: needs a path, e.g. imagefolder:/data/hospital_a")
    path = Path(spec).expanduser()
    if not path.is_absolute() and root is not None:
        path = root / path
    return str(path.resolve())


def _load_imagefolder(folder: Path, seed: int, size: int) -> DatasetSplits:
    classes, pixels, labels = _read_image_folder(folder, size, channels=None)
    what = f"image folder '{folder}'"
    train_idx, test_idx = _stratified_split(labels, TEST_FRACTION, seed, what)
    train, test = _split_pixels(pixels, labels, train_idx, test_idx, classes)
    source = (
        f"ImageFolder {folder}: {len(labels)} images resized to {size}x{size}, split "
        f"{len(train)}/{len(test)} stratified, seed {seed}"
    )
    return DatasetSplits(IMAGEFOLDER_PREFIX + str(folder), train, test, source)


def _read_image_folder(
    folder: Path, size: int, channels: int | None
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Decode an ImageFolder into uint8 (N, C, size, size) pixels and int64 labels.

    ``channels=None`` picks 1 when every image is grayscale, else 3.
    """
    from torchvision.datasets import ImageFolder

    expected = "one sub-folder per class holding images (torchvision ImageFolder layout)"
    if not folder.is_dir():
        raise DataRootError(f"image folder '{folder}' not found: expected {expected}")
    try:
        index = ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as err:
        raise DataRootError(
            f"image folder '{folder}' unusable: expected {expected} ({err})"
        ) from err
    decoded = [_decode(path, size) for path, _ in index.samples]
    if channels is None:
        channels = 1 if all(img.shape[0] == 1 for img in decoded) else 3
    pixels = np.empty((len(decoded), channels, size, size), dtype=np.uint8)
    for i, img in enumerate(decoded):
        pixels[i] = img[:channels]  # a 1-channel image broadcasts to 3 (gray -> RGB)
    labels = np.asarray(index.targets, dtype=np.int64)
    return tuple(index.classes), pixels, labels


def _decode(path: str, size: int) -> np.ndarray:
    """One image file as uint8 (C, size, size): C = 1 for grayscale modes, else 3.

    PIL rather than ``torchvision.io``: torchvision 0.29 deprecates its decoders (in
    favour of TorchCodec), and in UNCHANGED mode it returns a palette PNG's colour
    indices as if they were gray levels. PIL decodes the 10,000 CIFAR-10 JPEGs in
    about 1.6 s here. Resizing squashes to size x size with PIL's bilinear filter,
    which antialiases when shrinking; alpha channels are dropped.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grayscale
                wide = np.asarray(im, dtype=np.float32)
                if im.mode == "I" and wide.max(initial=0) <= 255:
                    wide = wide * 257.0
                im = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), "L")
            elif im.mode in ("1", "L", "LA"):
                im = im.convert("L") if im.mode != "L" else im
            elif im.mode != "RGB":
                im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataRootError(f"cannot decode image '{path}': {err}") from err
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


# --- shared helpers ---------------------------------------------------------------


def _resolve(data_root: str | Path) -> Path:
    return Path(data_root).expanduser().resolve()


def _require_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise DataRootError(
            f"dataset {name!r} needs a data root (no download here) — pass --data-root "
            f"pointing at the folder that contains {name}/"
        )
    return root


def _require_files(folder: Path, files: tuple[str, ...], what: str, subdir: str) -> None:
    expected = f"{' and '.join(files)} ({what})"
    hint = f"pass --data-root pointing at the folder that contains {subdir}/"
    if not folder.is_dir():
        raise DataRootError(f"data root '{folder}' not found: expected {expected} — {hint}")
    for name in files:
        if not (folder / name).is_file():
            raise DataRootError(
                f"data file '{folder / name}' not found: expected {expected} — {hint}"
            )


def _stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (train, test) index split.

    The test part holds ``ceil(test_fraction * N)`` records (as scikit-learn's
    ``train_test_split`` does), shared out over the classes in proportion to their
    size by largest remainder, each class keeping at least one training record; which
    records of a class go to test is a seeded random draw. numpy rather than
    scikit-learn because importing ``sklearn.model_selection`` costs about 2 s in
    every client process.
    """
    labels = np.asarray(labels)
    n = len(labels)
    n_test = math.ceil(test_fraction * n)
    classes, counts = np.unique(labels, return_counts=True)
    if n < 2 or n_test < 1 or n_test >= n:
        raise ValueError(
            f"cannot split {what} into stratified train/test parts: {n} records are too few"
        )
    raw = counts * (n_test / n)
    per_class = np.floor(raw).astype(np.int64)
    short = n_test - int(per_class.sum())
    if short > 0:
        per_class[np.argsort(-(raw - per_class), kind="stable")[:short]] += 1
    per_class = np.minimum(per_class, counts - 1)
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for cls, k in zip(classes, per_class):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[:k])
        train_parts.append(members[k:])
    train = rng.permutation(np.concatenate(train_parts)).astype(np.int64)
    test = rng.permutation(np.concatenate(test_parts)).astype(np.int64)
    return train, test


def _uint8_to_unit(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0))


def _split_pixels(
    pixels: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    classes: tuple[str, ...],
) -> tuple[ImageData, ImageData]:
    """Normalised train/test ImageData from uint8 pixels and index lists."""
    return _normalised_pair(
        _uint8_to_unit(pixels[train_idx]),
        labels[train_idx],
        _uint8_to_unit(pixels[test_idx]),
        labels[test_idx],
        classes,
    )


def _normalised_pair(
    train_x: torch.Tensor,
    train_y: np.ndarray,
    test_x: torch.Tensor,
    test_y: np.ndarray,
    classes: tuple[str, ...],
) -> tuple[ImageData, ImageData]:
    """Train/test ImageData normalised with the training split's per-channel statistics.

    ``train_x`` and ``test_x`` are float32 in [0, 1], owned by the caller and
    normalised in place.
    """
    stats = train_x.to(torch.float64)
    mean = stats.mean(dim=(0, 2, 3))
    std = stats.std(dim=(0, 2, 3), unbiased=False)
    del stats
    std = torch.where(std > 0, std, torch.ones_like(std))
    shift = mean.to(torch.float32).view(1, -1, 1, 1)
    scale = std.to(torch.float32).view(1, -1, 1, 1)
    train_x.sub_(shift).div_(scale)
    test_x.sub_(shift).div_(scale)
    mean_t = tuple(float(m) for m in mean)
    std_t = tuple(float(s) for s in std)
    return (
        ImageData(train_x, _labels_tensor(train_y), classes, mean_t, std_t),
        ImageData(test_x, _labels_tensor(test_y), classes, mean_t, std_t),
    )


def _labels_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(labels, dtype=np.int64))
