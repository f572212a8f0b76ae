"""Data augmentation for augmentation multiplicity: random translations of whole images.

Each copy of an image is shifted by a random whole number of pixels, up to ``max_shift``
in each direction, with the border pixels repeated into the space it leaves (a random
crop of the edge-padded image, as in De et al. 2022's CIFAR-10 and MNIST runs, without
their flips: digits and chest X-rays are not mirror-symmetric).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["augmented_copies", "random_shifts"]


def random_shifts(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """``images`` (N, C, H, W), each translated by its own random (dy, dx) in
    ``[-max_shift, max_shift]^2``, edges repeated."""
    if max_shift < 1 or len(images) == 0:
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = offsets[0][:, None] + torch.arange(height)  # (N, H)
    cols = offsets[1][:, None] + torch.arange(width)  # (N, W)
    picked = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)


def augmented_copies(
    images: torch.Tensor, labels: torch.Tensor, copies: int, max_shift: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``copies`` randomly shifted copies of every record, record by record (rows
    ``i*copies .. i*copies + copies - 1`` belong to record ``i``), and their labels."""
    if copies == 1:
        return images, labels
    repeated = images.repeat_interleave(copies, 0)
    return random_shifts(repeated, max_shift, generator), labels.repeat_interleave(copies)
