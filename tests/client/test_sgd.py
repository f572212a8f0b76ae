"""MomentumSGD takes torch's SGD steps, without importing TorchDynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from client.sgd import MomentumSGD
from task.model import build_model


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_steps_match_torch_sgd(momentum):
    torch.manual_seed(0)
    ours_model = build_model((1, 32, 32), 10)
    torch_model = build_model((1, 32, 32), 10)
    torch_model.load_state_dict(ours_model.state_dict())
    ours = MomentumSGD(ours_model.parameters(), lr=0.3, momentum=momentum)
    reference = torch.optim.SGD(torch_model.parameters(), lr=0.3, momentum=momentum)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(8, 1, 32, 32, generator=generator)
        y = torch.randint(0, 10, (8,), generator=generator)
        for model, optimizer in ((ours_model, ours), (torch_model, reference)):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    for (name, a), (_, b) in zip(ours_model.state_dict().items(), torch_model.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7), name


def test_rejects_a_bad_learning_rate_or_momentum():
    params = build_model((1, 32, 32), 10).parameters()
    with pytest.raises(ValueError, match="lr > 0"):
        MomentumSGD(params, lr=0.0)
    with pytest.raises(ValueError, match="momentum < 1"):
        MomentumSGD(params, lr=0.1, momentum=1.0)


def test_a_private_round_with_the_fast_engine_does_not_import_torchdynamo():
    script = (
        "import sys, torch\n"
        "from client.training import LocalTrainingPlan, train_locally\n"
        "from task.model import build_model\n"
        "plan = LocalTrainingPlan(epochs=1, batch_size=8, learning_rate=0.1, momentum=0.5,"
        " noise_multiplier=1.0, max_grad_norm=1.0, accountant='prv', dp_engine='fast')\n"
        "x, y = torch.randn(32, 1, 32, 32), torch.randint(0, 10, (32,))\n"
        "result = train_locally(build_model((1, 32, 32), 10), x, y, plan, [], seed=0)\n"
        "assert result.steps == plan.steps(32)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip() == "False", out.stderr
