"""A client's round, free of Flower: plan, check the budget, train, account.

Order matters for privacy: the round's epsilon is computed from the steps it *will*
take (Poisson-sampled DP-SGD takes exactly ``epochs * len(loader)`` steps) before any
record is touched. A round whose epsilon would exceed the budget is declined, and the
update only leaves the client after its cost has been accounted.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client.data import ClientData
from client.training import LocalTrainingPlan, apply_weights, train_locally
from privacy.accounting import DPStep, calibrate_noise, compute_epsilon, merge_history
from task.config import RunConfig
from task.evaluation import evaluate
from task.feature_cache import shared_arrays
from task.model import build_model


class LocalRoundError(RuntimeError):
    """The client cannot take part in the round (its message names the client)."""


@dataclass
class LocalRoundOutcome:
    """What a round produced: an update and metrics, or a declined round."""

    history: list[DPStep]
    metrics: dict[str, float | int]
    update: dict[str, np.ndarray] = field(default_factory=dict)
    declined: bool = False
    reason: str = ""
    plan_record: dict[str, float | int | str] | None = None
    # What the client's ledger publishes with the round's reply (client.ledger_charge).
    ledger: dict[str, Any] = field(default_factory=dict)


def _noise_plan(
    config: RunConfig, sample_rate: float, round_steps: int, planned: Mapping | None
) -> tuple[float, dict[str, float | int | str] | None]:
    """The noise multiplier for this client, and the plan record to remember it by.

    With a target epsilon, sigma is calibrated once for the whole planned run
    (``num_server_rounds * round_steps`` steps at ``sample_rate``) and kept, so every
    round uses the same sigma and the total stays within the target.
    """
    if config.noise_multiplier > 0:
        return config.noise_multiplier, None
    total_steps = config.num_server_rounds * round_steps
    key = (
        f"{config.target_epsilon}|{config.delta}|{sample_rate}|{total_steps}|"
        f"{config.accountant}"
    )
    if planned is not None and planned.get("key") == key:
        return float(planned["noise-multiplier"]), dict(planned)
    sigma = calibrated_noise(config, sample_rate, total_steps)
    return sigma, {"key": key, "noise-multiplier": sigma}


def training_plan(config: RunConfig) -> LocalTrainingPlan:
    """The run's local training, before a noise multiplier is chosen."""
    return LocalTrainingPlan(
        epochs=config.local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        noise_multiplier=None,
        max_grad_norm=config.max_grad_norm,
        accountant=config.accountant,
        dp_engine=config.dp_engine,
        augmentations=config.augment_multiplicity,
    )


def calibrated_noise(config: RunConfig, sample_rate: float, total_steps: int) -> float:
    """``calibrate_noise`` for the run's target over ``total_steps`` at ``sample_rate``.

    In a simulation the result is shared through the run's private folder
    (:func:`task.feature_cache.shared_arrays`), where the driver puts what its clients will
    need while Ray starts (:func:`warm_accounting`): otherwise every actor calibrates the
    same sigma in its first round (about a second each). The key holds every argument, so a
    stored sigma is exactly the one this process would compute.
    """
    args = (config.target_epsilon, config.delta, sample_rate, total_steps, config.accountant)
    _, meta = shared_arrays(f"calibration|{args!r}",
                            lambda: ({}, {"noise-multiplier": calibrate_noise(*args)}))
    return float(meta["noise-multiplier"])


def shared_epsilon(history: Sequence[DPStep], delta: float, accountant: str) -> float:
    """``compute_epsilon(history, delta, accountant)``, shared like :func:`calibrated_noise`.

    Clients of an equal split spend the same epsilon at their k-th round, and the driver
    computes those ahead (:func:`warm_accounting`): an actor that finds them all never
    imports Opacus. The key is the whole merged history, so a stored epsilon is exactly the
    one this process would compute, rounded up as always.
    """
    if sum(step.steps for step in history) == 0:
        return 0.0
    args = (tuple(history), delta, accountant)
    _, meta = shared_arrays(f"epsilon|{args!r}",
                            lambda: ({}, {"epsilon": compute_epsilon(*args)}))
    return float(meta["epsilon"])


def warm_accounting(
    config: RunConfig,
    record_counts: Sequence[int],
    limit: int = 2,
    before_round: Callable[[int], bool] = lambda server_round: True,
) -> None:
    """Compute, as the clients holding ``record_counts`` training records will, their noise
    multipliers (:func:`calibrated_noise`) and the epsilon after each of their rounds
    (:func:`shared_epsilon`), for the first ``limit`` distinct settings they need. Equal
    splits need one or two; a skewed split can need one per client, and those would
    compete with the clients themselves for the cores. ``before_round(k)`` is called
    before the epsilons of round k: it may wait, and it stops the work by returning False.

    A client that trains in k rounds with sigma, sample rate q and s steps a round has the
    history ``[(sigma, q, k * s)]`` (:func:`privacy.accounting.merge_history`), k <= R.
    """
    if not config.dp:
        return
    plan = training_plan(config)
    settings: dict[tuple[float, int], None] = {}
    for count in record_counts:
        if count > 0 and config.delta < 1.0 / count:
            settings.setdefault((plan.sample_rate(count), plan.steps(count)))
    mechanisms = []
    for sample_rate, round_steps in list(settings)[:limit]:
        sigma, _ = _noise_plan(config, sample_rate, round_steps, None)
        mechanisms.append((sigma, sample_rate, round_steps))
    for rounds in range(1, config.num_server_rounds + 1):  # every client's first round first
        if not before_round(rounds):
            return
        for sigma, sample_rate, round_steps in mechanisms:
            shared_epsilon([DPStep(sigma, sample_rate, rounds * round_steps)], config.delta,
                           config.accountant)


def run_local_round(
    data: ClientData,
    global_weights: Mapping[str, np.ndarray],
    config: RunConfig,
    server_round: int,
    history: Sequence[DPStep],
    planned_noise: Mapping | None = None,
    budget: float | None = None,
) -> LocalRoundOutcome:
    """Run one round of local training for ``data.client_id``.

    ``budget`` is the client's epsilon budget; by default the run's target epsilon when
    the noise is calibrated to it, and none when the noise multiplier is fixed.
    """
    num_records = len(data.train_labels)
    if num_records == 0:
        raise LocalRoundError(f"{data.client_id} has no training records")
    plan = training_plan(config)
    sample_rate = plan.sample_rate(num_records)
    round_steps = plan.steps(num_records)
    metrics: dict[str, float | int] = {"num-examples": num_records, "server-round": server_round}
    plan_record = None
    epsilon = 0.0
    if config.dp:
        if config.delta >= 1.0 / num_records:
            raise LocalRoundError(
                f"{data.client_id}: delta {config.delta:g} must be below 1/N_local = "
                f"1/{num_records}; lower config key 'delta'"
            )
        sigma, plan_record = _noise_plan(config, sample_rate, round_steps, planned_noise)
        plan = LocalTrainingPlan(**{**plan.__dict__, "noise_multiplier": sigma})
        projected = merge_history(history, DPStep(sigma, sample_rate, round_steps))
        epsilon = shared_epsilon(projected, config.delta, config.accountant)
        if budget is None:
            budget = config.target_epsilon if config.calibrates_noise else math.inf
        metrics.update(
            {
                "noise-multiplier": sigma,
                "sample-rate": sample_rate,
                "delta": config.delta,
                "max-grad-norm": config.max_grad_norm,
            }
        )
        if epsilon > budget:
            metrics["epsilon"] = shared_epsilon(history, config.delta, config.accountant)
            return LocalRoundOutcome(
                history=list(history),
                metrics=metrics,
                declined=True,
                reason=(
                    f"{data.client_id} declines round {server_round}: its epsilon would "
                    f"reach {epsilon:.4f}, above its budget {budget:g}"
                ),
                plan_record=plan_record,
            )

    model = build_model(tuple(data.train_images.shape[1:]), data.num_classes, config.activation,
                        config.model)
    apply_weights(model, global_weights)
    seed = zlib.crc32(f"{config.seed}:{data.client_id}:{server_round}".encode())
    result = train_locally(model, data.train_images, data.train_labels, plan, history, seed)
    if config.dp and sum(h.steps for h in result.history) != sum(
        h.steps for h in history
    ) + round_steps:
        raise LocalRoundError(
            f"{data.client_id}: took {result.steps} steps but accounted for {round_steps}"
        )
    val_loss, val_accuracy = evaluate(model, data.val_images, data.val_labels)
    metrics.update(
        {
            "epsilon": epsilon,
            "steps": result.steps,
            "train-loss": result.train_loss,
            "val-loss": val_loss,
            "val-accuracy": val_accuracy,
            "val-examples": len(data.val_labels),
            "train-seconds": result.seconds,
        }
    )
    return LocalRoundOutcome(
        history=result.history,
        metrics=metrics,
        update=result.update,
        plan_record=plan_record,
    )
