"""Conversions between named numpy weights and Flower's ArrayRecord."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord


def to_record(weights: dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord holding ``weights`` under their names, in order."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in weights.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Named numpy arrays from an ArrayRecord, in order."""
    return {name: array.numpy() for name, array in record.items()}
