"""The scattering transform in front of the ``scatternet`` model (kymatio's filters)."""

from __future__ import annotations

import pytest
import torch

from task.datasets import load_dataset
from task.features import scattering_features, scattering_shape


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """Forty real handwritten digits (scikit-learn's, upsampled to 32x32)."""
    return load_dataset("digits", None, 0).train.images[:40]


@pytest.mark.parametrize(
    ("image_shape", "features"),
    [((1, 28, 28), (81, 7, 7)), ((3, 32, 32), (243, 8, 8)), ((1, 30, 17), (81, 7, 4)),
     ((1, 4, 4), (81, 1, 1))],
)
def test_shape_is_81_paths_per_channel_at_a_quarter_of_the_side(image_shape, features):
    assert scattering_shape(image_shape) == features
    out = scattering_features(torch.rand(3, *image_shape))
    assert out.shape == (3, *features) and out.dtype == torch.float32


def test_each_image_is_transformed_on_its_own(digits):
    together = scattering_features(digits)
    alone = torch.cat([scattering_features(digits[i : i + 1]) for i in range(len(digits))])
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_constant_image_has_only_its_average(digits):
    """Order 0 is a low-pass average; the wavelets of orders 1 and 2 have zero mean."""
    features = scattering_features(torch.full((2, 1, 28, 28), 0.7))
    assert torch.allclose(features[:, 0], torch.full_like(features[:, 0], 0.7), atol=1e-4)
    assert features[:, 1:].abs().max() < 1e-5


def test_positively_homogeneous(digits):
    """Convolutions and moduli commute with a positive scale: S(a x) = a S(x)."""
    features = scattering_features(digits)
    assert torch.allclose(scattering_features(2.5 * digits), 2.5 * features, atol=1e-4)
    assert (features[:, 1:] >= 0).all()  # moduli


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="3x3 are too small for the scattering transform"):
        scattering_features(torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"must be float32 \(N, C, H, W\)"):
        scattering_features(torch.rand(1, 28, 28))
    assert scattering_features(torch.rand(0, 1, 28, 28)).shape == (0, 81, 7, 7)
