"""Fixed input features: the scattering transform that the ``scatternet`` model learns on.

A scattering network (Mallat, "Group Invariant Scattering", CPAM 2012; Bruna & Mallat,
TPAMI 2013) cascades Morlet wavelet convolutions and complex moduli with no learned
weights. With ``J`` scales and ``L`` orientations an image ``x`` of C channels becomes
``C * (1 + J L + L^2 J (J - 1) / 2)`` maps with sides ``floor(side / 2^J)``:

    S0 x = x * phi_J
    S1 x = |x * psi_{j1, l1}| * phi_J                       (j1 < J)
    S2 x = ||x * psi_{j1, l1}| * psi_{j2, l2}| * phi_J      (j1 < j2 < J)

(``phi_J`` a Gaussian low-pass of width ``2^J``, ``psi`` the Morlet wavelets), all
subsampled by ``2^J``. With ``J = 2, L = 8`` a 1x28x28 digit becomes 81x7x7. These
coefficients are stable to small translations and deformations, which a network trained
under DP-SGD otherwise has to learn from noisy gradients: Tramer & Boneh ("Differentially
Private Learning Needs Better Features (or Much More Data)", ICLR 2021) showed that a
linear model on them beats end-to-end CNNs at a fixed epsilon. The transform is a fixed
function of one image, so computing it costs no privacy.

The wavelet filters and the cascade are kymatio's (Andreux et al., JMLR 2020).
"""

from __future__ import annotations

import torch

__all__ = ["SCATTERING_ORIENTATIONS", "SCATTERING_SCALES", "scattering_features",
           "scattering_shape"]

SCATTERING_SCALES = 2  # J
SCATTERING_ORIENTATIONS = 8  # L
_CHUNK = 500  # images per transform call: bounds the working memory (~40 MB at 28x28)


def _coefficients_per_channel(scales: int, orientations: int) -> int:
    """1 + J L + L^2 J (J - 1) / 2: the order 0, 1 and 2 paths."""
    return 1 + scales * orientations + orientations**2 * scales * (scales - 1) // 2


def scattering_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(channels, height, width) of the features of one image of ``image_shape``."""
    channels, height, width = image_shape
    side = 2**SCATTERING_SCALES
    if min(height, width) < side:
        raise ValueError(
            f"images of {height}x{width} are too small for the scattering transform: "
            f"{SCATTERING_SCALES} scales need a side of at least {side}"
        )
    return (
        channels * _coefficients_per_channel(SCATTERING_SCALES, SCATTERING_ORIENTATIONS),
        height // side,
        width // side,
    )


def scattering_features(images: torch.Tensor) -> torch.Tensor:
    """Scattering coefficients (N, C * 81, H // 4, W // 4) of float32 images
    (N, C, H, W), each image transformed on its own."""
    if images.ndim != 4 or images.dtype != torch.float32:
        raise ValueError(
            f"images must be float32 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    out_shape = scattering_shape(tuple(images.shape[1:]))
    if len(images) == 0:
        return images.new_zeros((0, *out_shape))
    transform = _transform(tuple(images.shape[2:]))
    with torch.no_grad():
        parts = [transform(images[i : i + _CHUNK]) for i in range(0, len(images), _CHUNK)]
    # kymatio returns (N, C, paths, H', W'); channels and paths merge into one axis.
    return torch.cat(parts).reshape(len(images), *out_shape).contiguous()


def _transform(side: tuple[int, int]) -> torch.nn.Module:
    # Not `kymatio.torch`: it also loads the 3-D frontend, whose filter bank imports
    # scipy.special.sph_harm (gone from SciPy 1.17); the 2-D frontend needs none of it.
    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

    return ScatteringTorch2D(J=SCATTERING_SCALES, shape=side, L=SCATTERING_ORIENTATIONS)
