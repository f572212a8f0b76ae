"""A client's records as its model takes them: images, or their scattering features."""

from __future__ import annotations

import torch

from client.data import load_client_data, load_node_data
from task.config import resolve_config
from task.features import scattering_features

LENET = resolve_config({"scenario": "digits", "seed": 3})
SCATTERNET = resolve_config({"scenario": "digits", "seed": 3, "model": "scatternet"})


def test_scatternet_clients_hold_the_features_of_their_own_records():
    images = load_client_data(1, 4, LENET)
    features = load_client_data(1, 4, SCATTERNET)
    assert features.train_images.shape[1:] == (81, 8, 8)
    assert torch.allclose(features.train_images, scattering_features(images.train_images))
    assert torch.allclose(features.val_images, scattering_features(images.val_images))
    assert torch.equal(features.train_labels, images.train_labels)


def test_features_are_computed_once_per_client_and_process():
    node = {"partition-id": 2, "num-partitions": 4}
    first = load_node_data(node, SCATTERNET)
    assert load_node_data(dict(node), SCATTERNET) is first
    assert load_node_data({"partition-id": 3, "num-partitions": 4}, SCATTERNET) is not first
    # Images need no computing: each round reads them from the dataset afresh.
    assert load_node_data(node, LENET) is not load_node_data(node, LENET)
