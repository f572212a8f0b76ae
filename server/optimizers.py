"""Server-side optimisers applied to the aggregated client update (FedOpt).

Clients send updates ``Delta_i = w_i - w``; the server receives only their weighted mean
``Delta = sum_i n_i Delta_i / sum_i n_i`` (under secure aggregation it never sees a single
``Delta_i``) and treats ``-Delta`` as a pseudo-gradient (Reddi et al., "Adaptive Federated
Optimization", ICLR 2021):

* FedAvg:  ``w <- w + eta * Delta`` (McMahan et al. 2017, with server learning rate eta);
* FedAvgM: ``m <- beta m + Delta;  w <- w + eta m`` (Hsu et al. 2019);
* FedAdam: ``m <- b1 m + (1-b1) Delta;  v <- b2 v + (1-b2) Delta^2;
  w <- w + eta m / (sqrt(v) + tau)`` (Reddi et al. 2021).

Flower's own strategies aggregate individual replies, which secure aggregation hides by
design, so the update rules live here and act on the aggregate alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ServerOptimizer:
    """Applies one of FedAvg, FedAvgM or FedAdam to the global weights."""

    kind: str = "fedavg"
    learning_rate: float = 1.0
    momentum: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    _first_moment: dict[str, np.ndarray] = field(default_factory=dict)
    _second_moment: dict[str, np.ndarray] = field(default_factory=dict)

    def step(
        self, weights: dict[str, np.ndarray], mean_update: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """New global weights from ``weights`` and the clients' mean update."""
        new: dict[str, np.ndarray] = {}
        for name, w in weights.items():
            delta = mean_update[name].astype(w.dtype, copy=False)
            if self.kind == "fedavg":
                step = delta
            elif self.kind == "fedavgm":
                m = self.momentum * self._first_moment.get(name, 0.0) + delta
                self._first_moment[name] = m
                step = m
            elif self.kind == "fedadam":
                m = self.momentum * self._first_moment.get(name, 0.0) + (1 - self.momentum) * delta
                v = self.beta_2 * self._second_moment.get(name, 0.0) + (1 - self.beta_2) * delta**2
                self._first_moment[name], self._second_moment[name] = m, v
                step = m / (np.sqrt(v) + self.tau)
            else:
                raise ValueError(f"unknown server optimizer {self.kind!r}")
            new[name] = (w + self.learning_rate * step).astype(w.dtype, copy=False)
        return new
