"""An exponential moving average (EMA) of the global model's parameters on the server.

    bar_w_t = decay * bar_w_{t-1} + (1 - decay) * w_t,    bar_w_1 = w_1

Averaging the iterates of noisy SGD (Polyak & Juditsky, SIAM J. Control Optim. 1992)
cancels part of the noise that each iterate still carries; De et al., "Unlocking
High-Accuracy Differentially Private Image Classification through Scale" (2022) found an
EMA of the parameters one of the largest single gains for DP-SGD. Each global model is
already differentially private, so their average is post-processing and costs no
privacy. The clients keep training from the raw global model; the average is what the
server evaluates and releases.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class ParameterEMA:
    """The running average of every parameter; ``decay`` 0 returns the latest weights."""

    def __init__(self, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self._average: dict[str, np.ndarray] | None = None

    def update(self, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Fold ``weights`` into the average and return the average (a new dict)."""
        if self._average is None or self.decay == 0.0:
            self._average = {k: np.array(v, copy=True) for k, v in weights.items()}
        else:
            d = self.decay
            self._average = {
                k: (d * self._average[k] + (1.0 - d) * v).astype(v.dtype, copy=False)
                for k, v in weights.items()
            }
        return dict(self._average)
