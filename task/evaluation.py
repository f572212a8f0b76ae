"""Evaluation of a model on held-out data: the same code for the server and clients."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``(images, labels)``."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    model.eval()
    total_loss = 0.0
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = images[start : start + batch_size]
        y = labels[start : start + batch_size]
        logits = model(x)
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == y).sum())
    return total_loss / len(labels), correct / len(labels)
