"""One round of local training on a client: plain SGD or DP-SGD, returning the update."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client.sgd import MomentumSGD
from privacy.accounting import DPStep, history_of
from privacy.fast_dpsgd import FastDPSGD, expected_batch_size
from task.augment import augmented_copies

#: Largest translation, in pixels, of an augmented copy (task.augment).
AUGMENT_SHIFT = 2


@dataclass(frozen=True)
class LocalTrainingPlan:
    """What a round of local training will do, known before any record is touched."""

    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    noise_multiplier: float | None  # None: no DP
    max_grad_norm: float
    accountant: str
    dp_engine: str = "fast"  # "fast" (privacy.fast_dpsgd) or "opacus" (privacy.dpsgd)
    augmentations: int = 1  # shifted copies per record, averaged (task.augment); 1 = none

    def __post_init__(self) -> None:
        # Opacus would clip each copy as a record of its own: K clipped terms per record,
        # K times the sensitivity its accountant assumes.
        private = self.noise_multiplier is not None
        if self.augmentations > 1 and private and self.dp_engine != "fast":
            raise ValueError(
                f"{self.augmentations} augmented copies per record need dp_engine 'fast' "
                f"(got {self.dp_engine!r}): only it averages a record's copies before clipping"
            )

    def data_loader(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> DataLoader:
        """The (non-private) loader whose length fixes the DP sample rate."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(images, labels),
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
        )

    def steps(self, num_records: int) -> int:
        """Optimizer steps this plan takes on ``num_records`` records."""
        return self.epochs * max(1, -(-num_records // self.batch_size))

    def sample_rate(self, num_records: int) -> float:
        """Poisson sampling probability q = 1 / (batches per epoch), as Opacus uses."""
        return 1.0 / max(1, -(-num_records // self.batch_size))


@dataclass
class LocalTrainingResult:
    """The update ``local - global`` and what training observed."""

    update: dict[str, np.ndarray]
    num_examples: int
    steps: int
    train_loss: float
    seconds: float
    history: list[DPStep] = field(default_factory=list)


def train_locally(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    plan: LocalTrainingPlan,
    history: Sequence[DPStep],
    seed: int,
) -> LocalTrainingResult:
    """Train ``model`` (holding the global weights) on the local records.

    ``seed`` fixes the shuffling of non-private training only; DP-SGD draws its
    sample and noise from the operating system's randomness (see ``privacy.dpsgd``).
    Under DP, ``plan.dp_engine`` picks the implementation: both take the same steps
    (Poisson sampling at ``plan.sample_rate``, clipping, noise, one accountant step per
    batch) and return the same history.

    Returns the parameter update and, under DP, the accountant history extended by this
    round's steps. ``model`` is left holding the locally trained weights.
    """
    start = time.perf_counter()
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer: MomentumSGD | torch.optim.Optimizer = MomentumSGD(
        model.parameters(), lr=plan.learning_rate, momentum=plan.momentum
    )
    if plan.noise_multiplier is not None and plan.dp_engine == "fast":
        losses, steps, extended = _train_fast(model, optimizer, images, labels, plan, history)
        return _result(model, global_state, labels, losses, steps, start, extended)
    loader = plan.data_loader(images, labels, seed)
    trained_model: nn.Module = model
    engine = None
    if plan.noise_multiplier is not None:
        # Imported here: the Opacus package costs a simulation actor about 2.8 s of imports,
        # and the default engine does not use it.
        from privacy.dpsgd import make_private

        engine, trained_model, optimizer, loader = make_private(
            model,
            torch.optim.SGD(model.parameters(), lr=plan.learning_rate, momentum=plan.momentum),
            loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            accountant=plan.accountant,
            history=history,
        )
    trained_model.train()
    losses: list[float] = []
    steps = 0
    shifts = torch.Generator().manual_seed(seed)
    for _ in range(plan.epochs):
        for x, y in loader:
            x, y = augmented_copies(x, y, plan.augmentations, AUGMENT_SHIFT, shifts)
            optimizer.zero_grad(set_to_none=True)
            # Poisson sampling can draw an empty batch; Opacus still takes a (pure
            # noise) step, which the accountant counts, so the forward pass runs anyway.
            loss = nn.functional.cross_entropy(trained_model(x), y, reduction="sum") / max(
                1, len(y)
            )
            loss.backward()
            if len(y) > 0:
                losses.append(loss.item())
            optimizer.step()
            steps += 1
    extended = history_of(engine.accountant) if engine is not None else list(history)
    return _result(model, global_state, labels, losses, steps, start, extended)


def _train_fast(
    model: nn.Module,
    optimizer: MomentumSGD,
    images: torch.Tensor,
    labels: torch.Tensor,
    plan: LocalTrainingPlan,
    history: Sequence[DPStep],
) -> tuple[list[float], int, list[DPStep]]:
    """DP-SGD with ``privacy.fast_dpsgd``: mean batch losses, steps, extended history."""
    num_records = len(labels)
    rate = plan.sample_rate(num_records)
    private = FastDPSGD(
        model,
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        sample_rate=rate,
        expected_batch_size=expected_batch_size(num_records, rate),
        history=history,
    )
    model.train()
    losses: list[float] = []
    steps = plan.steps(num_records)
    for x, y in private.batches(images, labels, steps):
        x, y = augmented_copies(x, y, plan.augmentations, AUGMENT_SHIFT, private.generator)
        batch_losses = private.step(x, y, plan.augmentations)
        if len(y) > 0:
            losses.append(batch_losses.mean().item())
    return losses, steps, private.history


def _result(
    model: nn.Module,
    global_state: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    losses: list[float],
    steps: int,
    start: float,
    history: list[DPStep],
) -> LocalTrainingResult:
    """The round's result: the update ``local - global`` and what training observed."""
    update = {
        name: (tensor.detach() - global_state[name]).numpy()
        for name, tensor in model.state_dict().items()
    }
    return LocalTrainingResult(
        update=update,
        num_examples=len(labels),
        steps=steps,
        train_loss=float(np.mean(losses)) if losses else float("nan"),
        seconds=time.perf_counter() - start,
        history=history,
    )


def apply_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Load numpy ``weights`` (keyed by parameter name) into ``model``."""
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
