"""DP-SGD (Abadi et al., CCS 2016) on a client's data through Opacus.

Each step draws a Poisson sample of the local records (each record independently with
probability q), clips every per-sample gradient to L2 norm at most C, sums, adds Gaussian
noise N(0, sigma^2 C^2 I) and divides by the expected batch size. The accountant attached
to the returned engine has already seen every earlier step of this client.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader

from privacy.accounting import DPStep, build_accountant
from privacy.seeds import unpredictable_seed

# Opacus warns that secure_mode is off; the sample and noise are seeded from os.urandom
# instead (see the module docstring). The backward-hook notice concerns inputs, which
# need no gradient.
for _message in ("Secure RNG turned off", "Full backward hook is firing"):
    warnings.filterwarnings("ignore", message=_message, category=UserWarning)


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader,
    noise_multiplier: float,
    max_grad_norm: float,
    accountant: str,
    history: Sequence[DPStep] = (),
) -> tuple[PrivacyEngine, GradSampleModule, DPOptimizer, DataLoader]:
    """Wrap model, optimizer and loader for DP-SGD with Poisson sampling.

    The sample rate is ``1 / len(data_loader)``, so one epoch is ``len(data_loader)``
    steps. The returned model wraps ``model``; parameters are shared, so read weights
    from ``model`` itself (its names carry no Opacus prefix).
    """
    engine = PrivacyEngine(accountant=accountant)
    engine.accountant = build_accountant(accountant, history)
    private_model, private_optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=_unpredictably_sampled(data_loader),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(unpredictable_seed()),
    )
    return engine, private_model, private_optimizer, private_loader


def _unpredictably_sampled(data_loader: DataLoader) -> DataLoader:
    """``data_loader`` with a generator seeded from ``os.urandom``.

    With ``secure_mode`` off, Opacus' Poisson sampler draws from the *loader's*
    generator, not the global RNG; a loader seeded for shuffling (a public seed) would
    make every DP batch predictable.
    """
    return DataLoader(
        data_loader.dataset,
        batch_size=data_loader.batch_size,
        drop_last=data_loader.drop_last,
        collate_fn=data_loader.collate_fn,
        num_workers=data_loader.num_workers,
        generator=torch.Generator().manual_seed(unpredictable_seed()),
    )
