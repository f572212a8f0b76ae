"""Computed model inputs and decoded datasets shared by the processes of one simulation.

A client's scattering features (:mod:`task.features`) are computed once per process and
kept in memory (``client.data``). In a simulation, though, Flower hands a client's
messages to whichever actor is free, so each of the actors met every client in its
first rounds and computed the same features again: on MNIST (10 clients, 2 actors) the
first three rounds took 15, 8.5 and 3.7 s against 0.65 s for a steady one.

Here the first process to compute the features of a set of images writes them to a file
named by a SHA-256 digest of the model's name and the images' bytes; every other process
of the simulation maps that file instead of computing (copy-on-write, so the pages are
shared until written, which training never does). Because the name is the images' own
digest, a file can only ever hold the features of exactly those images: there is nothing
to invalidate, and the runs of a sweep in one driver process share them too.

Decoded datasets, noise calibrations and epsilons go the same way (:func:`shared_arrays`,
used by :func:`task.datasets.load_dataset` and :func:`client.local_round.warm_accounting`):
the driver decodes the data before Ray starts and does the accounting while it starts,
and each actor reads the results instead of computing them again (for the bundled digits
that spares each actor importing scikit-learn, 0.9 s, and Opacus, 2.8 s).

The folder is named by the environment variable :data:`FEATURE_CACHE_ENV`, which the
simulation sets (:func:`share_between_processes`) before it loads any data or starts
Ray, so that Ray's workers inherit it. The files are derived from the clients' records,
so the folder is private to its user (``mkdtemp``: mode 0700) and is deleted when the
driver process exits. A deployed node never sets the variable: it has one client and
keeps its data and features in memory.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["FEATURE_CACHE_ENV", "share_between_processes", "shared_arrays", "shared_folder",
           "shared_inputs"]

#: The folder of the shared files; unset, every process computes its own.
FEATURE_CACHE_ENV = "FEDSHIELD_FEATURE_CACHE"


def share_between_processes() -> Path:
    """Name a fresh private folder in :data:`FEATURE_CACHE_ENV` for this process and the
    processes it starts from now on; keep the one already named. Deleted at exit."""
    current = os.environ.get(FEATURE_CACHE_ENV)
    if current and Path(current).is_dir():
        return Path(current)
    folder = tempfile.mkdtemp(prefix="fedshield-features-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ[FEATURE_CACHE_ENV] = folder
    return Path(folder)


def shared_folder() -> Path | None:
    """The folder named by :data:`FEATURE_CACHE_ENV`, or None when there is none."""
    folder = os.environ.get(FEATURE_CACHE_ENV)
    return Path(folder) if folder and Path(folder).is_dir() else None


def shared_inputs(
    images: torch.Tensor, model: str, compute: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``compute(images)``, read from the shared folder when another process of the
    simulation has computed it already, and written there otherwise."""
    import torch  # here, not above: the driver names the folder before it imports torch

    folder = shared_folder()
    if folder is None:
        return compute(images)
    path = folder / f"{_digest(images, model)}.npy"
    try:
        return torch.from_numpy(np.load(path, mmap_mode="c"))
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        path.unlink(missing_ok=True)  # unreadable: computed again below
    features = compute(images)
    # A staging name of its own per writer: two threads of one process (the driver's
    # accounting and its server) may store the same entry at once.
    descriptor, staged = tempfile.mkstemp(dir=folder, prefix=f"{path.stem}.", suffix=".tmp")
    with os.fdopen(descriptor, "wb") as handle:
        np.save(handle, features.numpy())
    os.replace(staged, path)  # atomic: a reader sees no file or the whole of it
    return features


def _digest(images: torch.Tensor, model: str) -> str:
    contiguous = images.detach().contiguous()
    digest = hashlib.sha256(f"{model}:{contiguous.dtype}:{tuple(contiguous.shape)}:".encode())
    digest.update(contiguous.numpy().data)
    return digest.hexdigest()


Arrays = dict[str, np.ndarray]


def shared_arrays(
    key: str, compute: Callable[[], tuple[Arrays, dict[str, Any]]]
) -> tuple[Arrays, dict[str, Any]]:
    """``compute()``'s named arrays and JSON-able metadata, mapped from the shared folder
    when a process of the simulation has stored them under ``key`` already, and stored
    there otherwise (computed in this process alone when there is no folder).

    ``key`` must determine what ``compute`` returns. The entry is a directory of one
    ``.npy`` file per array and ``meta.json``, renamed into place whole.
    """
    folder = shared_folder()
    if folder is None:
        return compute()
    path = folder / f"arrays-{hashlib.sha256(key.encode()).hexdigest()}"
    try:
        meta = json.loads((path / "meta.json").read_text())
        return {name: np.load(path / f"{name}.npy", mmap_mode="c")
                for name in meta["arrays"]}, meta["meta"]
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(path, ignore_errors=True)  # unreadable: computed again below
    arrays, meta = compute()
    staged = Path(tempfile.mkdtemp(dir=folder, prefix=f"{path.name}.", suffix=".tmp"))
    for name, array in arrays.items():
        np.save(staged / f"{name}.npy", array)
    (staged / "meta.json").write_text(json.dumps({"arrays": list(arrays), "meta": meta}))
    try:
        os.rename(staged, path)  # atomic: a reader sees no entry or the whole of it
    except OSError:  # another process stored it first: same key, same arrays
        shutil.rmtree(staged, ignore_errors=True)
    return arrays, meta
