import pytest
from opacus.accountants import PRVAccountant

from privacy.prv_domain import CachedDomainPRVAccountant, rdp_per_step

HISTORIES = [
    [(2.02, 0.089, 225)],
    [(0.7, 0.1, 30)],
    [(0.55, 0.01, 10)],
    [(5.0, 0.2, 2000)],
    [(1.2, 0.05, 40), (0.9, 0.05, 25)],
    [(1.1, 0.3, 8), (3.0, 0.02, 500), (1.1, 0.3, 8)],
]


def _with_history(cls, history):
    accountant = cls()
    accountant.history = list(history)
    return accountant


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("eps_error", [0.01, 0.003])
def test_epsilon_is_exactly_opacus(history, eps_error):
    ours = _with_history(CachedDomainPRVAccountant, history)
    opacus = _with_history(PRVAccountant, history)
    assert ours.get_epsilon(delta=1e-5, eps_error=eps_error) == opacus.get_epsilon(
        delta=1e-5, eps_error=eps_error)


@pytest.mark.parametrize("history", HISTORIES)
def test_domain_is_exactly_opacus(history):
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    prvs = [PoissonSubsampledGaussianPRV(q, sigma) for sigma, q, _ in history]
    steps = [n for _, _, n in history]
    args = dict(prvs=prvs, num_self_compositions=steps, eps_error=0.01, delta_error=1e-8)
    ours = CachedDomainPRVAccountant()._get_domain(**args)
    theirs = PRVAccountant()._get_domain(**args)
    assert (ours.t_min, ours.t_max, ours.size) == (theirs.t_min, theirs.t_max, theirs.size)


def test_a_mechanism_renyi_vector_is_computed_once_across_rounds():
    rdp_per_step.cache_clear()
    for rounds in range(1, 6):
        _with_history(CachedDomainPRVAccountant, [(1.7, 0.07, 11 * rounds)]).get_epsilon(delta=1e-5)
    info = rdp_per_step.cache_info()
    assert (info.misses, info.currsize) == (1, 1)
    assert info.hits >= 9  # two evaluations per domain, one domain per epsilon
