"""Cheap in-process screening of federated DP-SGD configurations (no Ray, no Flower).

Tuning on a shared CPU cannot afford a Flower simulation per candidate, so this runs the
*same* client round (:func:`client.local_round.run_local_round`: noise calibration,
budget check, Opacus DP-SGD, accounting) and the *same* server update
(:class:`server.optimizers.ServerOptimizer`) in one process, client after client. It
leaves out only the transport and secure aggregation, which change neither the update
nor its accounting. Candidates that win here are confirmed with ``fedshield simulate``.

    python -m simulations.screen --data-root ../shared/data --scenario hospitals \\
        --set activation=tanh --set learning-rate=1.0 --eval-every 5
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from client.data import load_client_data
from client.local_round import run_local_round
from privacy.accounting import DPStep
from server.ema import ParameterEMA
from server.federation import initial_weights
from server.optimizers import ServerOptimizer
from task.config import RunConfig, resolve_config
from task.datasets import load_dataset
from task.evaluation import evaluate
from task.model import build_model, model_inputs
from task.scenarios import SCENARIOS


def screen(
    config: RunConfig, num_clients: int, eval_every: int = 0,
    ema_decays: tuple[float, ...] = (),
) -> dict[str, Any]:
    """Run ``config`` in process; return the test accuracy of the model the server
    releases (the ``server-ema`` average, as in ``server.federation``), every
    ``eval_every`` rounds and at the end, and the largest epsilon spent.

    For each decay in ``ema_decays`` the curve of a server-side parameter EMA is
    reported too (evaluation only: the clients train from the raw model either way).
    """
    test = load_dataset(SCENARIOS[config.scenario].dataset, config.data_root or None,
                        config.seed).test
    test_inputs = model_inputs(test.images, config.model)
    shape, num_classes = tuple(test_inputs.shape[1:]), len(test.classes)
    weights = initial_weights(config, shape, num_classes)
    model = build_model(shape, num_classes, config.activation, config.model)
    optimizer = ServerOptimizer(config.server_optimizer, config.server_learning_rate,
                                config.server_momentum)
    clients = [load_client_data(i, num_clients, config) for i in range(num_clients)]
    histories: list[list[DPStep]] = [[] for _ in clients]
    plans: list[Mapping | None] = [None for _ in clients]
    curve: list[tuple[int, float]] = []
    released = ParameterEMA(config.server_ema)  # what the real server evaluates
    emas = {d: ParameterEMA(d) for d in ema_decays}
    ema_curves: dict[str, list[tuple[int, float]]] = {str(d): [] for d in ema_decays}
    epsilon = 0.0
    start = time.perf_counter()
    for server_round in range(1, config.num_server_rounds + 1):
        total: dict[str, np.ndarray] = {}
        weight = 0.0
        for i, data in enumerate(clients):
            out = run_local_round(data, weights, config, server_round, histories[i], plans[i])
            if out.declined:
                continue
            histories[i], plans[i] = out.history, out.plan_record or plans[i]
            epsilon = max(epsilon, float(out.metrics.get("epsilon", 0.0)))
            n = float(out.metrics["num-examples"])
            for k, v in out.update.items():
                total[k] = total.get(k, 0.0) + n * v
            weight += n
        if weight:
            weights = optimizer.step(weights, {k: v / weight for k, v in total.items()})
        averages = {d: ema.update(weights) for d, ema in emas.items()}
        evaluated = released.update(weights)
        last = server_round == config.num_server_rounds
        if last or (eval_every and server_round % eval_every == 0):
            model.load_state_dict({k: torch.from_numpy(v) for k, v in evaluated.items()})
            curve.append((server_round, evaluate(model, test_inputs, test.labels)[1]))
            for d, avg in averages.items():
                model.load_state_dict({k: torch.from_numpy(v) for k, v in avg.items()})
                ema_curves[str(d)].append((server_round, evaluate(model, test_inputs, test.labels)[1]))
    return {"accuracy": curve[-1][1], "curve": curve, "ema": ema_curves, "epsilon_max": epsilon,
            "seconds": time.perf_counter() - start}


def main() -> None:
    from fedshield.cli import parse_overrides

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="hospitals")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--ema", default="", help="comma-separated EMA decays to report too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {"scenario": args.scenario, "data-root": args.data_root,
                 **parse_overrides(args.sets)}
    decays = tuple(float(d) for d in args.ema.split(",") if d)
    result = screen(resolve_config(overrides), args.clients, args.eval_every, decays)
    print(json.dumps({"set": args.sets, **result}))


if __name__ == "__main__":
    main()
