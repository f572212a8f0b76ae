"""The networks the federation learns: the seed's LeNet-style CNN, and a ScatterNet variant.

Architecture (LeCun et al. 1998, in the form of the PyTorch CIFAR-10 tutorial and
Flower's quickstart)::

    conv1 6@5x5 -> act -> maxpool 2 -> conv2 16@5x5 -> act -> maxpool 2 -> flatten
    -> fc1 120 -> act -> fc2 84 -> act -> fc3 K

At ``in_shape=(3, 32, 32)`` and 10 classes this is exactly the seed network: 62,006
parameters, state-dict keys ``conv1.*, conv2.*, fc1.*, fc2.*, fc3.*``. The keys are
part of the wire format (parameters are exchanged by name), so do not rename layers.

``activation="tanh"`` selects the tempered-sigmoid family that Papernot et al.
("Tempered Sigmoid Activations for Deep Learning with Differential Privacy", AAAI
2021) found to lose less accuracy under DP-SGD than ReLU, whose unbounded outputs
make gradients larger and so more of them get clipped.

The network has no BatchNorm and no other layer that mixes samples within a batch, so
``opacus.validators.ModuleValidator.validate(model, strict=True)`` reports no errors
and per-sample gradients are well defined.

``model = "scatternet"`` is the variant of Tramer & Boneh ("Differentially Private
Learning Needs Better Features (or Much More Data)", ICLR 2021): a linear classifier on
fixed scattering coefficients (:mod:`task.features`), each group of 3 feature maps
normalised per sample (GroupNorm without learned scale or shift, so it mixes no samples
and has no parameters):

    logits = W vec(GroupNorm_G(S x)) + b,    G = channels / 3

Its input is the features, not the pixels: :func:`model_inputs` maps images to what a
model named ``model`` takes.
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from task.config import MODELS
from task.feature_cache import shared_inputs
from task.features import scattering_features, scattering_shape

__all__ = ["ACTIVATIONS", "LeNet", "ScatterNetClassifier", "build_model", "model_input_shape",
           "model_inputs"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}
_CHANNELS_PER_NORM_GROUP = 3

_KERNEL = 5
_POOL = 2


def _feature_side(side: int) -> int:
    """Spatial side after conv(5) -> pool(2) -> conv(5) -> pool(2); 0 if too small."""
    side = side - _KERNEL + 1
    if side < 1:
        return 0
    side //= _POOL
    side = side - _KERNEL + 1
    if side < 1:
        return 0
    return side // _POOL


def _normalise_shape(in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        dims = tuple(operator.index(d) for d in in_shape)
    except TypeError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(
            f"in_shape must be three positive ints (channels, height, width), got {in_shape!r}"
        )
    return dims  # type: ignore[return-value]


def _flattened_size(in_shape: tuple[int, int, int]) -> int:
    _, height, width = in_shape
    fh, fw = _feature_side(height), _feature_side(width)
    if fh < 1 or fw < 1:
        raise ValueError(
            f"input shape {tuple(in_shape)} is too small for LeNet: two 5x5 convolutions "
            "and two 2x2 max-pools need height and width of at least 16"
        )
    return 16 * fh * fw


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``nn.MaxPool2d(2, 2)`` of ``x`` (N, C, H, W) without autograd: the maximum of the
    four strided views ``x[..., i::2, j::2]``, i, j in {0, 1}, after dropping an odd last
    row or column, as the pooling does. The same values (NaN included), about eight times
    faster than ``max_pool2d``'s no-grad kernel on one thread for LeNet's first pooling
    (60x6x28x28: 0.3 ms against 2.5 ms); with gradients the module's own kernel is faster,
    so :meth:`LeNet.forward` uses this only when no gradient is recorded."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 1::2, 0::2]),
                         torch.maximum(x[..., 0::2, 1::2], x[..., 1::2, 1::2]))


class LeNet(nn.Module):
    """LeNet-style CNN for ``in_shape`` images and ``num_classes`` classes.

    Args:
        in_shape: (channels, height, width) of one input image; height and width must
            be at least 16.
        num_classes: number of output logits (>= 2).
        activation: ``"relu"`` (the seed) or ``"tanh"`` (tempered sigmoid).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        in_shape = _normalise_shape(in_shape)
        flat = _flattened_size(in_shape)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, "
                f"got {activation!r}"
            )
        self.in_shape: tuple[int, int, int] = in_shape
        self.num_classes = num_classes
        self.activation = activation

        self.conv1 = nn.Conv2d(in_shape[0], 6, kernel_size=_KERNEL)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=_KERNEL)
        self.pool = nn.MaxPool2d(_POOL, _POOL)
        self.act = ACTIVATIONS[activation]()
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes) for a batch of shape (N, *in_shape)."""
        pool = self.pool if torch.is_grad_enabled() else max_pool_2x2
        x = pool(self.act(self.conv1(x)))
        x = pool(self.act(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)


class ScatterNetClassifier(nn.Module):
    """Linear classifier on scattering features of shape ``in_shape`` (see the module
    docstring); ``num_classes`` logits."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        in_shape = _normalise_shape(in_shape)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        channels = in_shape[0]
        groups = channels // _CHANNELS_PER_NORM_GROUP
        if groups < 1 or channels % _CHANNELS_PER_NORM_GROUP:
            groups = 1
        self.in_shape: tuple[int, int, int] = in_shape
        self.num_classes = num_classes
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.classifier = nn.Linear(channels * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes) for features of shape (N, *in_shape)."""
        return self.classifier(torch.flatten(self.norm(x), 1))


def _check_model_name(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}, got {model!r}")


def model_input_shape(
    image_shape: tuple[int, int, int], model: str = "lenet"
) -> tuple[int, int, int]:
    """The shape of one input of ``model`` for images of ``image_shape``; ValueError
    when the model cannot take such images."""
    _check_model_name(model)
    image_shape = _normalise_shape(image_shape)
    if model == "scatternet":
        return scattering_shape(image_shape)
    _flattened_size(image_shape)
    return image_shape


def model_inputs(images: torch.Tensor, model: str = "lenet") -> torch.Tensor:
    """What ``model`` takes for ``images`` (N, C, H, W): the images themselves for
    ``lenet``, their scattering features for ``scatternet``."""
    _check_model_name(model)
    if model == "scatternet":
        return shared_inputs(images, model, scattering_features)
    return images


def build_model(
    in_shape: tuple[int, int, int], num_classes: int, activation: str = "relu",
    model: str = "lenet",
) -> nn.Module:
    """The federation's ``model`` for inputs of ``in_shape`` (see :func:`model_inputs`)
    and ``num_classes`` classes; ``activation`` applies to the LeNet (the ScatterNet
    classifier is linear)."""
    _check_model_name(model)
    if model == "scatternet":
        return ScatterNetClassifier(in_shape=in_shape, num_classes=num_classes)
    return LeNet(in_shape=in_shape, num_classes=num_classes, activation=activation)
