"""The federation's CNN: the seed LeNet, its shapes, and Opacus compatibility."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from task.model import LeNet, build_model

SEED_KEYS = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
    "fc3.weight",
    "fc3.bias",
]


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_is_the_seed_network() -> None:
    model = LeNet()
    assert _num_params(model) == 62_006
    assert list(model.state_dict()) == SEED_KEYS
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv1.weight"] == (6, 3, 5, 5)
    assert shapes["conv2.weight"] == (16, 6, 5, 5)
    assert shapes["fc1.weight"] == (120, 400)
    assert shapes["fc2.weight"] == (84, 120)
    assert shapes["fc3.weight"] == (10, 84)


@pytest.mark.parametrize(
    ("in_shape", "num_classes", "flat"),
    [((3, 32, 32), 10, 400), ((1, 32, 32), 10, 400), ((1, 28, 28), 2, 256), ((1, 28, 32), 3, 320)],
)
def test_forward_shapes(in_shape: tuple[int, int, int], num_classes: int, flat: int) -> None:
    model = build_model(in_shape, num_classes)
    assert model.fc1.in_features == flat
    out = model(torch.randn(4, *in_shape))
    assert out.shape == (4, num_classes)
    assert list(model.state_dict()) == SEED_KEYS


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("in_shape", [(3, 32, 32), (1, 28, 28)])
def test_opacus_validator_strict_passes(activation: str, in_shape: tuple[int, int, int]) -> None:
    model = LeNet(in_shape, 10, activation)
    assert ModuleValidator.validate(model, strict=True) == []


def test_tanh_activation_uses_tanh_and_keeps_parameters() -> None:
    model = LeNet(activation="tanh")
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert _num_params(model) == 62_006
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_per_sample_gradients_with_opacus() -> None:
    model = GradSampleModule(LeNet((1, 28, 28), 2))
    logits = model(torch.randn(5, 1, 28, 28))
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1, 1]))
    loss.backward()
    for p in model.parameters():
        assert p.grad_sample.shape == (5, *p.shape)


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (3, 15, 32), (3, 32, 12)])
def test_too_small_input_names_the_shape(in_shape: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match=r"input shape \(\d+, \d+, \d+\) is too small") as info:
        LeNet(in_shape)
    assert str(tuple(in_shape)) in str(info.value)


def test_smallest_input_works() -> None:
    assert LeNet((1, 16, 16))(torch.zeros(1, 1, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "sigmoid"}, "activation must be one of 'relu', 'tanh'"),
        ({"num_classes": 1}, "num_classes must be an int >= 2"),
        ({"in_shape": (32, 32)}, "in_shape must be three positive ints"),
        ({"in_shape": (0, 32, 32)}, "in_shape must be three positive ints"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeNet(**kwargs)


def test_same_seed_same_initial_weights() -> None:
    torch.manual_seed(0)
    a = build_model((1, 28, 28), 2)
    torch.manual_seed(0)
    b = build_model((1, 28, 28), 2)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
