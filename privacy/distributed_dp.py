"""Client-level differential privacy in the distributed form, for use under secure aggregation.

The unit of privacy here is a whole client (an institution): its entire update. Under
secure aggregation the server only ever sees the sum of the updates, so it cannot add the
noise itself; instead every client adds a share of it (Kairouz, Liu & Steinke, "The
Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation",
ICML 2021; the clipping follows DP-FedAvg, McMahan, Ramage, Talwar & Zhang, ICLR 2018).

Mechanism, for a round with ``n`` expected clients (the sampled cohort), clip norm ``C`` and
noise multiplier ``sigma``:

    client i sends   x_i = clip_C(Delta_i) + z_i,   z_i ~ N(0, (sigma C)^2 / n * I)
    server learns    S   = sum_{i in U} x_i = sum_{i in U} clip_C(Delta_i) + N(0, (sigma C)^2 |U| / n * I)

where ``clip_C(v) = v * min(1, C / ||v||_2)`` and ``U`` is the set of clients whose input
reached the sum. Removing one client's data (its update replaced by zero, its noise share
kept: zero-out adjacency) moves ``S`` by at most ``C`` in L2 norm, so ``S`` is a Gaussian
mechanism with noise multiplier

    sigma_eff = sigma * sqrt(|U| / n).

When every expected client contributes, ``sigma_eff = sigma``. When clients drop out or
decline, the sum carries less noise; the shortfall is never ignored: the round is accounted
with ``sigma_eff`` (:func:`effective_noise_multiplier`).

Accounting composes the rounds with client subsampling at rate ``q = cohort / eligible``
clients with Opacus' RDP or PRV accountant (one subsampled-Gaussian step per round), via
:mod:`privacy.accounting`, which rounds epsilon up. Two approximations, both usual in
DP-FedAvg (McMahan et al. 2018) and stated here so nobody mistakes them for more: the
fixed-size cohort is accounted as Poisson sampling at rate ``q``, and the continuous
Gaussian is analysed although each share is then rounded to the secure-aggregation grid
(step ``R / (2^(q-1) - 1)``: with the defaults about ``2^-24`` of a noise share's std at 10
clients, ``2^-20`` at 100, where the 32-bit ring leaves ``q = 25``; Kairouz et al. 2021
close this gap formally with the discrete Gaussian).

Noise shares are secret: they are drawn from a generator seeded with 128 bits from
``os.urandom``, never from a public seed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from privacy.accounting import DPStep, compute_epsilon, merge_history

__all__ = [
    "clip_to_norm",
    "noise_share_std",
    "add_noise_share",
    "effective_noise_multiplier",
    "ClientLevelRound",
    "ClientLevelAccountant",
]


def clip_to_norm(vector: np.ndarray, clip_norm: float) -> np.ndarray:
    """``v * min(1, C / ||v||_2)``: the vector scaled down to L2 norm at most ``C``."""
    if clip_norm <= 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    norm = float(np.linalg.norm(vector))
    return vector * min(1.0, clip_norm / norm) if norm > 0 else vector.copy()


def noise_share_std(noise_multiplier: float, clip_norm: float, expected_clients: int) -> float:
    """``sigma C / sqrt(n)``: the std of one client's share, so ``n`` shares sum to ``sigma C``."""
    if expected_clients < 1:
        raise ValueError(f"expected_clients must be >= 1, got {expected_clients}")
    return noise_multiplier * clip_norm / math.sqrt(expected_clients)


def add_noise_share(vector: np.ndarray, std: float) -> np.ndarray:
    """``vector + N(0, std^2 I)`` with the noise drawn from a secretly seeded generator."""
    generator = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
    return vector + generator.normal(0.0, std, size=vector.shape)


def effective_noise_multiplier(
    noise_multiplier: float, contributors: int, expected_clients: int
) -> float:
    """``sigma * sqrt(|U| / n)``: the multiplier the sum actually carries when only
    ``contributors`` of the ``expected_clients`` noise shares reached it."""
    if not 0 < contributors <= expected_clients:
        raise ValueError(
            f"contributors must be in [1, expected_clients={expected_clients}], got {contributors}"
        )
    return noise_multiplier * math.sqrt(contributors / expected_clients)


@dataclass(frozen=True)
class ClientLevelRound:
    """One accounted round: who was expected, who contributed, and what it cost."""

    server_round: int
    expected_clients: int
    contributors: int
    sample_rate: float
    effective_noise_multiplier: float
    epsilon: float


@dataclass
class ClientLevelAccountant:
    """Client-level (epsilon, delta) of the released sums, composed over the rounds.

    Attributes:
        noise_multiplier: ``sigma`` the clients calibrate their shares to.
        clip_norm: ``C``, the L2 bound of each client's update.
        delta: the client-level delta (should be below 1 / number of clients).
        accountant: ``"prv"`` or ``"rdp"`` (Opacus).
    """

    noise_multiplier: float
    clip_norm: float
    delta: float
    accountant: str
    history: list[DPStep] = field(default_factory=list)
    rounds: list[ClientLevelRound] = field(default_factory=list)

    @property
    def epsilon(self) -> float:
        """Epsilon after every accounted round (0 before the first), rounded up."""
        return self.rounds[-1].epsilon if self.rounds else 0.0

    def record_round(
        self, server_round: int, expected_clients: int, contributors: int, sample_rate: float
    ) -> float:
        """Account one released sum; return the cumulative epsilon.

        ``sample_rate`` is the probability that a given eligible client was sampled this
        round; ``contributors`` counts the noise shares that reached the sum.
        """
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        sigma = effective_noise_multiplier(self.noise_multiplier, contributors, expected_clients)
        self.history = merge_history(self.history, DPStep(sigma, sample_rate, 1))
        # Opacus' PRV takes log(1 - q), -inf when every client is sampled (q = 1); it
        # handles that case correctly, so numpy's warning is noise.
        with np.errstate(divide="ignore"):
            epsilon = compute_epsilon(self.history, self.delta, self.accountant)
        self.rounds.append(
            ClientLevelRound(
                server_round, expected_clients, contributors, sample_rate, sigma, epsilon
            )
        )
        return epsilon

    def to_dict(self) -> dict:
        """The summary entry ``client_level_epsilon``."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "adjacency": "zero-out (one client's update replaced by zero)",
            "by_round": {
                str(r.server_round): {
                    "epsilon": r.epsilon,
                    "expected_clients": r.expected_clients,
                    "contributors": r.contributors,
                    "sample_rate": r.sample_rate,
                    "effective_noise_multiplier": r.effective_noise_multiplier,
                }
                for r in self.rounds
            },
        }
