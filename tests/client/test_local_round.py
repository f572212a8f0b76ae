"""A client's rounds: cumulative accounting, budget guard, clean parameter names."""

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from opacus.accountants import create_accountant

from client.data import ClientData
from client.local_round import LocalRoundError, run_local_round
from client.state import load_history, load_plan, save_history
from privacy.accounting import accountant_epsilon
from task.config import resolve_config
from task.model import build_model


def synthetic_client(n: int = 120, seed: int = 0) -> ClientData:
    """Two well separated classes of 1x28x28 images."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randn(n, 1, 28, 28, generator=g) * 0.3 + labels.view(-1, 1, 1, 1).float()
    return ClientData("client-7", 2, images[:100], labels[:100], images[100:], labels[100:])


def global_weights(seed: int = 0) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    return {k: v.numpy().copy() for k, v in build_model((1, 28, 28), 2).state_dict().items()}


def run_rounds(config, rounds, data=None):
    data = data or synthetic_client()
    state = RecordDict()
    outcomes = []
    for server_round in range(1, rounds + 1):
        outcome = run_local_round(
            data, global_weights(), config, server_round, load_history(state), load_plan(state)
        )
        save_history(state, outcome.history, outcome.plan_record)
        outcomes.append(outcome)
    return outcomes


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_epsilon_composes_across_rounds_like_an_opacus_accountant(accountant):
    config = resolve_config(
        {"num-server-rounds": 3, "batch-size": 20, "target-epsilon": 2.0, "delta": 1e-3,
         "accountant": accountant, "local-epochs": 1}
    )
    outcomes = run_rounds(config, 3)
    epsilons = [o.metrics["epsilon"] for o in outcomes]
    assert epsilons[0] < epsilons[1] < epsilons[2] <= 2.0
    sigma = outcomes[0].metrics["noise-multiplier"]
    assert all(o.metrics["noise-multiplier"] == sigma for o in outcomes)
    reference = create_accountant(accountant)
    for outcome, epsilon in zip(outcomes, epsilons):
        for _ in range(int(outcome.metrics["steps"])):
            reference.step(noise_multiplier=sigma, sample_rate=outcome.metrics["sample-rate"])
        expected = accountant_epsilon(reference, delta=1e-3)
        assert epsilon == pytest.approx(expected, abs=1e-4)
        assert epsilon >= expected  # rounded up, never down


def test_client_declines_the_round_that_would_cross_its_budget():
    config = resolve_config(
        {"num-server-rounds": 2, "batch-size": 20, "target-epsilon": 1.0, "delta": 1e-3}
    )
    outcomes = run_rounds(config, 3)
    assert not outcomes[0].declined and not outcomes[1].declined
    assert outcomes[2].declined
    assert "client-7 declines round 3" in outcomes[2].reason
    assert outcomes[2].metrics["epsilon"] == outcomes[1].metrics["epsilon"] <= 1.0
    assert outcomes[2].update == {}


def test_update_uses_the_models_own_parameter_names():
    config = resolve_config({"num-server-rounds": 1, "batch-size": 20, "delta": 1e-3})
    (outcome,) = run_rounds(config, 1)
    assert list(outcome.update) == list(global_weights())
    assert any(np.abs(v).sum() > 0 for v in outcome.update.values())


def test_delta_must_be_below_one_over_n():
    config = resolve_config({"num-server-rounds": 1, "delta": 0.05})
    with pytest.raises(LocalRoundError, match=r"client-7: delta 0.05 must be below 1/N_local = 1/100"):
        run_rounds(config, 1)


def test_no_dp_reports_no_epsilon_and_trains():
    config = resolve_config({"num-server-rounds": 1, "dp": False, "batch-size": 20,
                             "learning-rate": 0.1, "local-epochs": 10})
    (outcome,) = run_rounds(config, 1)
    assert outcome.metrics["epsilon"] == 0.0
    assert outcome.history == []
    assert outcome.metrics["val-accuracy"] > 0.9
