"""Opacus' PRV accountant, with the Rényi bound behind its domain computed once per mechanism.

Opacus' ``PRVAccountant`` (Gopi, Lee & Wutschitz, "Numerical Composition of Differential
Privacy", NeurIPS 2021) discretises each privacy random variable on a domain
``[-L, L]``. ``L`` is a safe truncation bound (their remark 5.6), taken from Rényi DP:

    L = max( eps_RDP(all steps, delta_err / 4),
             max over mechanisms of eps_RDP(1 step, delta_err / (8 * total steps)),
             eps_err ) + 3

and every evaluation builds it afresh from ``compute_rdp`` over 150 orders, 99 of them
fractional, each a series summed in Python. That is most of the accountant's cost (4 of
every 5 seconds of a first round's calibration here). Yet the Rényi divergence of ``n``
steps of one subsampled Gaussian is ``n`` times that of one step (Mironov, Talwar &
Zhang 2019), so the per-order vector depends only on ``(noise_multiplier,
sample_rate)``: it is computed once per mechanism here (an LRU cache) and scaled by the
step count. The domain, and so every epsilon, is bit for bit the one Opacus computes
(checked in ``tests/privacy/test_prv_domain.py``); only repeated work is skipped:
the two Rényi evaluations of one domain, the two meshes of
:func:`privacy.accounting.accountant_epsilon`, and every round after the first, where
only the step count changes.
"""

from __future__ import annotations

import functools

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.analysis.prv import Domain

__all__ = ["CachedDomainPRVAccountant", "rdp_per_step", "safe_domain_size"]

_ORDERS = tuple(RDPAccountant.DEFAULT_ALPHAS)


@functools.lru_cache(maxsize=4096)
def rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """Rényi DP of one subsampled-Gaussian step at each of Opacus' default orders."""
    rdp = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(_ORDERS)
    )
    rdp.setflags(write=False)  # shared by every caller of the cache
    return rdp


def _rdp_epsilon(mechanisms: list[tuple[float, float, int]], delta: float) -> float:
    """What ``RDPAccountant(history=mechanisms).get_epsilon(delta)`` returns."""
    rdp = sum(rdp_per_step(sigma, q) * steps for sigma, q, steps in mechanisms)
    epsilon, _ = rdp_analysis.get_privacy_spent(orders=list(_ORDERS), rdp=rdp, delta=delta)
    return float(epsilon)


def safe_domain_size(
    mechanisms: list[tuple[float, float, int]], eps_error: float, delta_error: float
) -> float:
    """``opacus.accountants.analysis.prv.compute_safe_domain_size`` for the history
    ``mechanisms`` of ``(noise_multiplier, sample_rate, steps)``, from cached Rényi vectors."""
    total_steps = sum(steps for _, _, steps in mechanisms)
    bound = _rdp_epsilon(mechanisms, delta_error / 4)
    for sigma, q, _ in mechanisms:
        bound = max(bound, _rdp_epsilon([(sigma, q, 1)], delta_error / (8 * total_steps)))
    return max(bound, eps_error) + 3


class CachedDomainPRVAccountant(PRVAccountant):
    """Opacus' PRV accountant; its domain comes from :func:`safe_domain_size`."""

    def _get_domain(self, prvs, num_self_compositions, eps_error, delta_error) -> Domain:
        mechanisms = [(prv.noise_multiplier, prv.sample_rate, steps)
                      for prv, steps in zip(prvs, num_self_compositions)]
        size = safe_domain_size(mechanisms, eps_error, delta_error)
        # Opacus' mesh: fine enough for eps_error after all the compositions.
        mesh = eps_error / np.sqrt(sum(num_self_compositions) * np.log(12 / delta_error) / 2)
        return Domain.create_aligned(-size, size, mesh)

    def _get_dprv(self, eps_error, delta_error):
        # Full-batch steps (q = 1: a client holding fewer records than a batch) have Opacus
        # compare with log(1 - q) = -inf, which is what it means; numpy's warning about
        # that log reached the user's console.
        with np.errstate(divide="ignore"):
            return super()._get_dprv(eps_error, delta_error)
