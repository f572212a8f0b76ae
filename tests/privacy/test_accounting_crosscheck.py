"""Our epsilons agree with an independent implementation: Google's ``dp-accounting``.

The event a client's DP-SGD produces is a Poisson-subsampled Gaussian mechanism,
self-composed once per optimiser step. ``privacy.accounting.compute_epsilon`` (the value a
client records in its ledger) is compared on the same event sequence with
``dp_accounting``: our RDP with its ``RdpAccountant`` (same Renyi orders, so both optimise
over the same set) and our PRV with its ``PLDAccountant`` (privacy loss distributions, a
different numerical method for the same exact composition). Agreement is required within
1% of epsilon, over a grid of noise multipliers, sampling rates and step counts. Full-batch
steps (q = 1) are checked against the Gaussian mechanism's exact epsilon instead.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import dp_accounting
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from opacus.accountants import RDPAccountant as OpacusRDP
from scipy.optimize import brentq
from scipy.stats import norm

from privacy.accounting import DPStep, compute_epsilon

RELATIVE_TOLERANCE = 0.01
DELTA = 1e-5
# PLD's pessimistic discretisation; 4e-4 keeps its own error well below 0.1% on this grid.
PLD_INTERVAL = 4e-4

GRID = [
    (sigma, q, steps)
    for sigma in (0.9, 1.5, 3.0)
    for q in (0.01, 0.06)
    for steps in (100, 1000)
]


@pytest.fixture(autouse=True)
def _quiet_dp_accounting():
    # dp-accounting logs a warning for each fractional Renyi order it cannot evaluate.
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def dp_event(history: Sequence[DPStep]) -> dp_accounting.DpEvent:
    """The dp-accounting event for a history of subsampled-Gaussian steps."""
    return dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(
                    h.sample_rate, dp_accounting.GaussianDpEvent(h.noise_multiplier)
                ),
                h.steps,
            )
            for h in history
        ]
    )


def google_rdp(history: Sequence[DPStep], delta: float) -> float:
    accountant = RdpAccountant(orders=OpacusRDP.DEFAULT_ALPHAS)
    accountant.compose(dp_event(history))
    return accountant.get_epsilon(delta)


def google_pld(history: Sequence[DPStep], delta: float) -> float:
    accountant = PLDAccountant(value_discretization_interval=PLD_INTERVAL)
    accountant.compose(dp_event(history))
    return accountant.get_epsilon(delta)


def assert_within_tolerance(ours: float, theirs: float) -> None:
    assert ours == pytest.approx(theirs, rel=RELATIVE_TOLERANCE), (ours, theirs)


@pytest.mark.parametrize(("sigma", "q", "steps"), GRID)
def test_rdp_matches_dp_accounting_rdp(sigma: float, q: float, steps: int):
    history = [DPStep(sigma, q, steps)]
    assert_within_tolerance(compute_epsilon(history, DELTA, "rdp"), google_rdp(history, DELTA))


@pytest.mark.parametrize(("sigma", "q", "steps"), GRID)
def test_prv_matches_dp_accounting_pld(sigma: float, q: float, steps: int):
    history = [DPStep(sigma, q, steps)]
    assert_within_tolerance(compute_epsilon(history, DELTA, "prv"), google_pld(history, DELTA))


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_a_changing_sequence_of_rounds_matches(accountant: str):
    """Rounds with different parameters compose like dp-accounting's ComposedDpEvent."""
    history = [DPStep(1.2, 0.02, 300), DPStep(0.9, 0.05, 100), DPStep(1.2, 0.02, 200)]
    reference = google_rdp if accountant == "rdp" else google_pld
    assert_within_tolerance(
        compute_epsilon(history, 1e-6, accountant), reference(history, 1e-6)
    )


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The exact epsilon of a Gaussian mechanism with sensitivity / sigma = ``mu`` at
    ``delta`` (Balle & Wang, "Improving the Gaussian Mechanism for Differential Privacy",
    ICML 2018, theorem 8): the root of Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu) =
    delta."""
    def excess(epsilon: float) -> float:
        return (norm.cdf(mu / 2 - epsilon / mu)
                - math.exp(epsilon) * norm.cdf(-mu / 2 - epsilon / mu) - delta)

    return brentq(excess, 0.0, 500.0)


@pytest.mark.parametrize(("sigma", "steps"), [(1.5, 20), (4.0, 50), (10.0, 200)])
def test_full_batch_steps_are_the_gaussian_mechanism_and_raise_no_warning(sigma, steps):
    """A client with fewer records than a batch samples all of them (q = 1): T steps are
    one Gaussian mechanism with mu = sqrt(T) / sigma, whose epsilon is known exactly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's warning about log(0)
        ours = compute_epsilon([DPStep(sigma, 1.0, steps)], DELTA, "prv")
    exact = gaussian_epsilon(math.sqrt(steps) / sigma, DELTA)
    assert exact <= ours <= exact * (1 + RELATIVE_TOLERANCE), (ours, exact)
