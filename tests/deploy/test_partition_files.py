"""`fedshield partition`: a folder per client holding exactly what its simulated twin
trains on; the ClientApp reads it from the node config's data-path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.cli_runner import fedshield
from client.data import NodeDataError, load_client_data, load_node_data, node_client_id
from task.config import resolve_config
from task.partition import PartitionError
from task.partition_store import (
    PartitionStoreError,
    load_partition,
    save_partition,
    write_client_partitions,
)

CONFIG = resolve_config({"scenario": "digits", "seed": 7, "partitioning": "dirichlet",
                         "dirichlet-alpha": 1.0})


def partition(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return fedshield("partition", *args, cwd=cwd, timeout=180)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parts") / "partitions"
    result = partition("--clients", "3", "--seed", "7", "--partitioning", "dirichlet",
                       "--alpha", "1.0", "--out", str(out), cwd=out.parent)
    assert result.returncode == 0, result.stderr
    return out


def test_each_client_gets_its_simulated_records(folders: Path):
    assert sorted(p.name for p in folders.iterdir()) == ["client-0", "client-1", "client-2"]
    for i in range(3):
        simulated = load_client_data(i, 3, CONFIG)
        deployed = load_node_data({"data-path": str(folders / f"client-{i}")}, CONFIG)
        for field in ("train_images", "train_labels", "val_images", "val_labels"):
            assert torch.equal(getattr(simulated, field), getattr(deployed, field)), (i, field)
        assert deployed.client_id == f"client-{i}" and deployed.num_classes == 10


def test_deployed_scatternet_clients_compute_their_simulated_features(folders: Path):
    config = resolve_config({**CONFIG.to_flower(), "model": "scatternet"})
    simulated = load_client_data(1, 3, config)
    deployed = load_node_data({"data-path": str(folders / "client-1")}, config)
    assert deployed.train_images.shape[1:] == (81, 8, 8)
    assert torch.allclose(simulated.train_images, deployed.train_images)
    assert torch.allclose(simulated.val_images, deployed.val_images)


def test_manifest_describes_the_partition(folders: Path):
    manifest = json.loads((folders / "client-1" / "manifest.json").read_text())
    assert manifest["dataset"] == "digits" and manifest["partition-id"] == 1
    assert manifest["num-partitions"] == 3 and manifest["seed"] == 7
    assert manifest["partitioning"] == "dirichlet" and len(manifest["sha256"]) == 64


def test_partitions_are_not_replaced_without_force(folders: Path):
    before = (folders / "client-0" / "data.npz").read_bytes()
    result = partition("--clients", "3", "--out", str(folders), cwd=folders.parent)
    assert result.returncode == 2 and "pass --force to replace it" in result.stderr
    assert (folders / "client-0" / "data.npz").read_bytes() == before


def test_client_id_comes_from_the_node_config_first(folders: Path):
    path = str(folders / "client-2")
    assert node_client_id({"data-path": path, "client-id": "hospital-3"}) == "hospital-3"
    assert node_client_id({"data-path": path}) == "client-2"
    assert node_client_id({"partition-id": 4, "num-partitions": 9}) == "client-4"
    assert node_client_id({"data-path": "/nowhere/bank-7"}) == "bank-7"


def test_simulation_node_config_still_works():
    data = load_node_data({"partition-id": 0, "num-partitions": 3}, CONFIG)
    assert torch.equal(data.train_labels, load_client_data(0, 3, CONFIG).train_labels)


def test_altered_data_is_refused(tmp_path: Path):
    images, labels = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    folder = save_partition(tmp_path / "c", images, labels,
                            {"client-id": "c", "partition-id": 0, "dataset": "digits",
                             "classes": ["0", "1"]})
    assert len(load_partition(folder).labels) == 4
    with (folder / "data.npz").open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x01")
    with pytest.raises(NodeDataError, match="SHA-256"):
        load_node_data({"data-path": str(folder)}, CONFIG)


def test_missing_folder_and_wrong_dataset_name_the_problem(tmp_path: Path):
    with pytest.raises(NodeDataError, match="manifest.json' is missing"):
        load_node_data({"data-path": str(tmp_path / "absent")}, CONFIG)
    folder = save_partition(tmp_path / "m", torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]),
                            {"client-id": "m", "partition-id": 0, "dataset": "mnist",
                             "classes": [str(d) for d in range(10)]})
    with pytest.raises(NodeDataError, match="dataset 'mnist'.*trains on 'digits'"):
        load_node_data({"data-path": str(folder)}, CONFIG)
    with pytest.raises(NodeDataError, match="must be a folder path"):
        load_node_data({"data-path": 3}, CONFIG)


def test_save_refuses_bad_shapes(tmp_path: Path):
    with pytest.raises(PartitionStoreError, match="expected images"):
        save_partition(tmp_path, torch.zeros(3, 8, 8), torch.zeros(3, dtype=torch.int64), {})
    assert not list(tmp_path.iterdir())


SAMPLED = resolve_config({"scenario": "digits", "seed": 7, "partitioning": "sampled",
                          "records-per-client": 16, "val-fraction": 0.25})


def test_sampled_client_data_is_its_own_draw_split_into_train_and_val(monkeypatch):
    import client.data as client_data
    from task.datasets import load_dataset
    from task.partition import sampled_indices

    def population_wide(*args, **kwargs):
        raise AssertionError("sampled clients must not build every client's partition")

    monkeypatch.setattr(client_data, "_partitions", population_wide)
    train = load_dataset("digits", None, SAMPLED.seed).train
    data = load_client_data(9_999, 10_000, SAMPLED)
    assert data.client_id == "client-9999" and data.num_classes == 10
    assert (len(data.train_labels), len(data.val_labels)) == (12, 4)
    expected = sampled_indices(len(train.labels), 16, 9_999, SAMPLED.seed)
    images = torch.cat([data.train_images, data.val_images])
    labels = torch.cat([data.train_labels, data.val_labels])
    rows = {tuple(train.images[i].flatten().tolist()) + (int(train.labels[i]),)
            for i in expected.tolist()}
    got = {tuple(images[j].flatten().tolist()) + (int(labels[j]),) for j in range(16)}
    assert got == rows
    again = load_client_data(9_999, 10_000, SAMPLED)
    assert torch.equal(again.train_images, data.train_images)
    assert not torch.equal(load_client_data(0, 10_000, SAMPLED).train_images,
                           data.train_images)


def test_sampled_client_data_errors_name_the_problem():
    with pytest.raises(PartitionError, match="partition-id 3 is outside 0..2"):
        load_client_data(3, 3, SAMPLED)
    too_many = resolve_config({"partitioning": "sampled", "records-per-client": 10**6})
    with pytest.raises(PartitionError, match="scenario 'digits'.*records-per-client is 1000000"):
        load_client_data(0, 3, too_many)


def test_sampled_partitions_are_not_written_for_deployment(tmp_path: Path):
    with pytest.raises(PartitionError, match="overlap between clients"):
        write_client_partitions(SAMPLED, 3, tmp_path / "api")
    assert not (tmp_path / "api").exists()
    result = partition("--clients", "3", "--partitioning", "sampled",
                       "--out", str(tmp_path / "parts"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "sampled records overlap between clients" in lines[0]
    assert "disjoint scheme (iid, dirichlet, quantity)" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "parts").exists()
