"""Client-level DP in the distributed form: clipping, noise shares, shortfall, accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from privacy.distributed_dp import (
    ClientLevelAccountant,
    add_noise_share,
    clip_to_norm,
    effective_noise_multiplier,
    noise_share_std,
)


def test_clipping_bounds_the_norm_and_leaves_small_updates_alone():
    big = np.full(100, 1.0)
    assert np.linalg.norm(clip_to_norm(big, 2.0)) == pytest.approx(2.0)
    small = np.full(100, 0.01)
    np.testing.assert_array_equal(clip_to_norm(small, 2.0), small)


def test_n_noise_shares_add_up_to_std_sigma_c():
    sigma, clip, n = 1.3, 0.7, 16
    std = noise_share_std(sigma, clip, n)
    total = sum(add_noise_share(np.zeros(50_000), std) for _ in range(n))
    assert total.std() == pytest.approx(sigma * clip, rel=0.02)


def test_noise_shares_are_fresh_every_time():
    a, b = add_noise_share(np.zeros(1000), 1.0), add_noise_share(np.zeros(1000), 1.0)
    assert not np.array_equal(a, b)


def test_dropouts_reduce_the_effective_multiplier():
    assert effective_noise_multiplier(2.0, 10, 10) == 2.0
    assert effective_noise_multiplier(2.0, 4, 16) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="contributors"):
        effective_noise_multiplier(2.0, 0, 16)


@pytest.mark.parametrize(("name", "reference_cls"), [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_epsilon_grows_over_rounds_and_matches_opacus(name, reference_cls):
    accountant = ClientLevelAccountant(1.0, 0.5, 1e-5, name)
    epsilons = [accountant.record_round(r, 10, 10, 0.1) for r in (1, 2, 3)]
    assert 0 < epsilons[0] < epsilons[1] < epsilons[2] == accountant.epsilon

    reference = reference_cls()
    for _ in range(3):
        reference.step(noise_multiplier=1.0, sample_rate=0.1)
    expected = reference.get_epsilon(delta=1e-5)
    assert accountant.epsilon == pytest.approx(expected, rel=0.02)


def test_a_round_with_dropouts_costs_more_than_a_full_one():
    full, short = (ClientLevelAccountant(1.0, 0.5, 1e-5, "rdp") for _ in range(2))
    full.record_round(1, 10, 10, 0.2)
    short.record_round(1, 10, 6, 0.2)
    assert short.epsilon > full.epsilon
    sigma = 1.0 * math.sqrt(6 / 10)
    assert short.rounds[0].effective_noise_multiplier == pytest.approx(sigma)
    reference = RDPAccountant()
    reference.step(noise_multiplier=sigma, sample_rate=0.2)
    assert short.epsilon == pytest.approx(reference.get_epsilon(delta=1e-5), abs=1e-4)
    assert short.to_dict()["by_round"]["1"]["contributors"] == 6
