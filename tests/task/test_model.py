"""The federation's CNN: the seed LeNet, its shapes, and Opacus compatibility."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from task.model import (
    LeNet,
    ScatterNetClassifier,
    build_model,
    max_pool_2x2,
    model_input_shape,
    model_inputs,
)

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


@pytest.mark.parametrize("shape", [(5, 6, 28, 28), (3, 16, 10, 10), (2, 4, 7, 9), (1, 1, 2, 3)])
def test_no_grad_pooling_is_max_pool2d(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape)
    x[0, 0, 0, 0] = float("nan")
    assert torch.equal(max_pool_2x2(x).isnan(), nn.functional.max_pool2d(x, 2).isnan())
    assert torch.allclose(max_pool_2x2(x), nn.functional.max_pool2d(x, 2), rtol=0, atol=0,
                          equal_nan=True)


@pytest.mark.parametrize("in_shape", [(3, 32, 32), (1, 28, 28), (1, 29, 31)])
def test_evaluation_gives_the_logits_of_the_training_forward(in_shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(in_shape, 10)
    x = torch.randn(8, *in_shape)
    with torch.no_grad():
        evaluated = model(x)
    assert torch.equal(evaluated, model(x).detach())


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


def test_scatternet_is_a_linear_classifier_on_normalised_features() -> None:
    model = build_model((81, 7, 7), 10, model="scatternet")
    assert isinstance(model, ScatterNetClassifier)
    assert list(model.state_dict()) == ["classifier.weight", "classifier.bias"]
    assert _num_params(model) == 81 * 7 * 7 * 10 + 10
    assert model.norm.num_groups == 27 and not list(model.norm.parameters())
    assert ModuleValidator.validate(model, strict=True) == []


def test_scatternet_normalises_each_sample_on_its_own() -> None:
    torch.manual_seed(0)
    model = build_model((81, 7, 7), 10, model="scatternet")
    x = torch.rand(6, 81, 7, 7)
    together = model(x)
    assert torch.allclose(together[2], model(x[2:3])[0], atol=1e-6)
    # GroupNorm takes out each group's scale: a sample scaled by 3 keeps its logits.
    assert torch.allclose(model(3 * x[:1]), together[:1], atol=1e-4)


def test_model_inputs_are_the_images_or_their_scattering_features() -> None:
    images = torch.rand(3, 1, 28, 28)
    assert model_inputs(images, "lenet") is images
    assert model_inputs(images, "scatternet").shape == (3, 81, 7, 7)
    assert model_input_shape((1, 28, 28), "scatternet") == (81, 7, 7)
    assert model_input_shape((3, 32, 32), "lenet") == (3, 32, 32)


def test_unknown_model_or_unfit_shape_names_the_problem() -> None:
    with pytest.raises(ValueError, match="model must be one of 'lenet', 'scatternet', got 'vgg'"):
        build_model((1, 28, 28), 10, model="vgg")
    with pytest.raises(ValueError, match=r"input shape \(1, 8, 8\) is too small for LeNet"):
        model_input_shape((1, 8, 8), "lenet")
    with pytest.raises(ValueError, match="too small for the scattering transform"):
        model_input_shape((1, 3, 3), "scatternet")
