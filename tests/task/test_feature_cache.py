"""Scattering features and decoded datasets shared between the processes of a simulation
through files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from task.datasets import clear_cache, load_dataset
from task.feature_cache import (
    FEATURE_CACHE_ENV,
    share_between_processes,
    shared_arrays,
    shared_inputs,
)
from task.features import scattering_features
from task.model import model_inputs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("digits", None, 0).train.images[:12]


class CountingTransform:
    """The real scattering transform, counting how often it runs."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return scattering_features(images)


@pytest.mark.parametrize("named", [False, True])
def test_without_a_folder_every_call_computes_and_nothing_is_written(
    digits, monkeypatch, tmp_path, named
):
    if named:  # a folder that does not exist (any more) is not created
        monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path / "gone"))
    else:
        monkeypatch.delenv(FEATURE_CACHE_ENV, raising=False)
    transform = CountingTransform()
    first = shared_inputs(digits, "scatternet", transform)
    second = shared_inputs(digits, "scatternet", transform)
    assert transform.calls == 2 and torch.equal(first, second)
    assert list(tmp_path.iterdir()) == []


def test_features_are_computed_once_and_read_back_equal(digits, monkeypatch, tmp_path):
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    transform = CountingTransform()
    computed = shared_inputs(digits, "scatternet", transform)
    read = shared_inputs(digits.clone(), "scatternet", transform)
    assert transform.calls == 1
    assert torch.equal(computed, read) and torch.equal(read, scattering_features(digits))
    assert [p.suffix for p in tmp_path.iterdir()] == [".npy"]  # no staging file left


def test_other_images_or_another_model_name_get_their_own_file(digits, monkeypatch, tmp_path):
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    transform = CountingTransform()
    shared_inputs(digits[:6], "scatternet", transform)
    changed = digits[:6].clone()
    changed[0, 0, 0, 0] += 1e-3  # one pixel
    shared_inputs(changed, "scatternet", transform)
    shared_inputs(digits[:6], "another-model", transform)
    assert transform.calls == 3 and len(list(tmp_path.iterdir())) == 3


def test_an_unreadable_file_is_computed_again_and_replaced(digits, monkeypatch, tmp_path):
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    transform = CountingTransform()
    expected = shared_inputs(digits, "scatternet", transform)
    (stored,) = tmp_path.iterdir()
    stored.write_bytes(b"not a numpy file")
    assert torch.equal(shared_inputs(digits, "scatternet", transform), expected)
    assert transform.calls == 2
    assert torch.equal(shared_inputs(digits, "scatternet", transform), expected)
    assert transform.calls == 2


def test_another_process_reads_what_this_one_computed(digits, monkeypatch, tmp_path):
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    expected = model_inputs(digits, "scatternet")
    torch.save(digits, tmp_path / "images.pt")
    script = (
        "import sys, torch\n"
        "from task.feature_cache import shared_inputs\n"
        "def refuse(images):\n"
        "    raise SystemExit('computed instead of reading the shared file')\n"
        f"images = torch.load({str(tmp_path / 'images.pt')!r})\n"
        "features = shared_inputs(images, 'scatternet', refuse)\n"
        f"torch.save(features.clone(), {str(tmp_path / 'read.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                   env={**os.environ, FEATURE_CACHE_ENV: str(tmp_path)})
    assert torch.equal(torch.load(tmp_path / "read.pt"), expected)


def test_the_simulation_folder_is_private_and_kept_once_named(monkeypatch):
    monkeypatch.setenv(FEATURE_CACHE_ENV, "")  # restored after the test
    folder = share_between_processes()
    assert os.environ[FEATURE_CACHE_ENV] == str(folder) and folder.is_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert share_between_processes() == folder


LOAD_DIGITS = """
import hashlib, json, sys
from task.datasets import load_dataset
splits = load_dataset("digits", None, 3)
digest = hashlib.sha256()
for part in (splits.train, splits.test):
    digest.update(part.images.numpy().tobytes()); digest.update(part.labels.numpy().tobytes())
print(json.dumps({"digest": digest.hexdigest(), "classes": list(splits.classes),
                  "mean": list(splits.train.mean), "sklearn": "sklearn" in sys.modules}))
"""


def _load_digits_in_a_process(folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", LOAD_DIGITS], cwd=ROOT, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, FEATURE_CACHE_ENV: str(folder)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_dataset_decoded_by_one_process_is_mapped_by_the_next(tmp_path):
    first = _load_digits_in_a_process(tmp_path)
    second = _load_digits_in_a_process(tmp_path)
    assert first["sklearn"] and not second["sklearn"]  # the second decoded nothing
    assert second == {**first, "sklearn": False}
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("arrays-")]) == 1
    assert not list(tmp_path.glob("*.tmp"))  # no staging directory left


def test_a_mapped_dataset_equals_the_decoded_one_and_a_broken_entry_is_redone(
    monkeypatch, tmp_path
):
    decoded = load_dataset("digits", None, 5)
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    clear_cache()
    stored = load_dataset("digits", None, 5)  # decoded again, and stored
    (entry,) = tmp_path.iterdir()
    clear_cache()
    mapped = load_dataset("digits", None, 5)
    for a, b in ((decoded, stored), (decoded, mapped)):
        assert torch.equal(a.train.images, b.train.images)
        assert torch.equal(a.test.labels, b.test.labels)
        assert (a.classes, a.train.mean, a.test.std, a.source) == (
            b.classes, b.train.mean, b.test.std, b.source)
    (entry / "meta.json").write_text("{not json")
    clear_cache()
    again = load_dataset("digits", None, 5)
    assert torch.equal(again.train.images, decoded.train.images)
    assert json.loads((entry / "meta.json").read_text())["meta"]["name"] == decoded.name
    clear_cache()


def test_without_a_folder_arrays_are_computed_every_time(monkeypatch, tmp_path):
    monkeypatch.delenv(FEATURE_CACHE_ENV, raising=False)
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(4).numpy()}, {"n": 4}

    assert shared_arrays("k", compute)[1] == {"n": 4} and shared_arrays("k", compute)[1] == {"n": 4}
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_two_threads_storing_one_entry_at_once_both_get_it_and_leave_no_staging(
    digits, monkeypatch, tmp_path
):
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path))
    both_computing = threading.Barrier(2, timeout=30)
    images = digits[:8]

    def arrays():
        both_computing.wait()  # neither stores before the other has started computing
        return {"x": torch.arange(4).numpy()}, {"n": 4}

    def features(batch):
        both_computing.wait()
        return batch * 2

    results: list[object] = []
    for store in (lambda: shared_arrays("k", arrays)[1],
                  lambda: shared_inputs(images, "m", features)):
        threads = [threading.Thread(target=lambda: results.append(store())) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert results[:2] == [{"n": 4}, {"n": 4}]
    assert all(torch.equal(torch.as_tensor(r), images * 2) for r in results[2:4])
    assert len(results) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(list(tmp_path.iterdir())) == 2
