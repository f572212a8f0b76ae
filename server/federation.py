"""The coordinator's loop: sample clients, run a round, update and evaluate the model.

A round's signed ledger entries arrive with its training reports. They are merged into the
coordinator's copy (:class:`server.ledger_merge.CoordinatorLedger`) on a background thread
from the moment those reports are in, so that under secure aggregation the merge runs
beside the unmask stage instead of after it; the round waits for the merge to be committed
before its model is updated and its record written, and waits for it even when the round
fails afterwards, so no charge a client reported is lost.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from flwr.serverapp import Grid

from privacy.distributed_dp import ClientLevelAccountant
from server.ema import ParameterEMA
from server.ledger_merge import CoordinatorLedger
from server.optimizers import ServerOptimizer
from server.results import RoundRecord, RunResults, new_run_id, round_record_dict
from server.secure_workflow import SecureWorkflow
from server.workflow import ClientReport, PlainWorkflow, RoundAggregate, unnamed_client
from task.background import in_background
from task.config import RunConfig
from task.datasets import load_dataset
from task.evaluation import evaluate
from task.model import build_model, model_inputs
from task.records import to_record
from task.scenarios import SCENARIOS

log = logging.getLogger(__name__)

RoundCallback = Callable[[RoundRecord], None]


class FederationError(RuntimeError):
    """The run cannot go on (too few clients, every client failed, ...)."""


@dataclass
class ClientLedgerView:
    """The server's small record of one client: its latest status and epsilon."""

    client_id: str
    epsilon: float = 0.0
    rounds_trained: int = 0
    exhausted: bool = False
    last_status: str = ""
    steps: int = 0
    mechanism: dict[str, float] = field(default_factory=dict)
    epsilon_by_round: dict[int, float] = field(default_factory=dict)


def wait_for_nodes(grid: Grid, minimum: int, timeout: float, population: int = 0) -> list[int]:
    """Node ids once at least ``minimum`` nodes are connected, and all ``population`` of
    them when the population is known (a simulation registers its nodes while the
    ServerApp starts: round 1 of 10,000 would otherwise sample from the first few
    hundred); FederationError on timeout."""
    wanted = max(minimum, population)
    deadline = time.monotonic() + timeout
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= wanted:
            return node_ids
        if time.monotonic() > deadline:
            if len(node_ids) >= minimum:
                raise FederationError(
                    f"only {len(node_ids)} of the simulation's {population} client nodes "
                    f"registered after {timeout:.0f} s"
                )
            raise FederationError(
                f"only {len(node_ids)} client node(s) connected after {timeout:.0f} s; "
                f"the run needs at least {minimum} (config key 'min-train-clients')"
            )
        # A simulation registers its nodes within seconds; remote ones connect slowly.
        time.sleep(0.2 if len(node_ids) < minimum else 0.02)


def sample_nodes(node_ids: list[int], fraction: float, minimum: int, rng: random.Random) -> list[int]:
    """ceil(fraction * available) nodes (at least ``minimum``), uniformly without replacement."""
    count = min(len(node_ids), max(minimum, math.ceil(fraction * len(node_ids))))
    return sorted(rng.sample(node_ids, count))


@dataclass
class Cohort:
    """The nodes sampled for a round and those that were eligible, or why there is no round."""

    node_ids: list[int]
    sampled: list[int] = field(default_factory=list)
    eligible: list[int] = field(default_factory=list)
    stop: str = ""


def sample_cohort(
    grid: Grid,
    config: RunConfig,
    clients: dict[int, ClientLedgerView],
    rng: random.Random,
    server_round: int,
) -> Cohort:
    """Round ``server_round``'s cohort among the connected clients with budget left."""
    node_ids = sorted(grid.get_node_ids())
    eligible = [n for n in node_ids if not (n in clients and clients[n].exhausted)]
    if len(eligible) < config.min_train_clients:
        return Cohort(node_ids, stop=(
            f"stopped before round {server_round}: only {len(eligible)} client(s) have "
            f"privacy budget left, fewer than min-train-clients={config.min_train_clients}"
        ))
    sampled = sample_nodes(eligible, config.fraction_train, config.min_train_clients, rng)
    return Cohort(node_ids, sampled, eligible)


def initial_weights(config: RunConfig, shape: tuple[int, int, int], num_classes: int) -> dict[str, np.ndarray]:
    """The global model's starting weights, deterministic for the run's seed."""
    torch.manual_seed(config.seed)
    model = build_model(shape, num_classes, config.activation, config.model)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def make_workflow(config: RunConfig) -> PlainWorkflow | SecureWorkflow:
    """Secure aggregation unless config key 'secure-aggregation' is false."""
    return SecureWorkflow(config) if config.secure_aggregation else PlainWorkflow()


def account_client_level(
    accountant: ClientLevelAccountant,
    server_round: int,
    aggregate: RoundAggregate,
    sampled: list[int],
    eligible: list[int],
) -> None:
    """Charge a released sum to the client-level accountant. The sum carries the noise
    shares of its contributors only, so a round with dropouts is charged with the reduced
    multiplier sigma * sqrt(contributors / sampled); an aborted round releases nothing."""
    if aggregate.aborted or not aggregate.trained:
        return
    epsilon = accountant.record_round(
        server_round, len(sampled), len(aggregate.trained), len(sampled) / len(eligible)
    )
    if len(aggregate.trained) < len(sampled):
        log.warning(
            "round %d: %d of %d clients contributed, so the sum carries client-level noise "
            "multiplier %.4f instead of %.4f; client-level epsilon is now %.4f",
            server_round, len(aggregate.trained), len(sampled),
            accountant.rounds[-1].effective_noise_multiplier, accountant.noise_multiplier,
            epsilon,
        )


def _client_view(clients: dict[int, ClientLedgerView], report: ClientReport) -> ClientLedgerView:
    """The server's record of the client behind ``report``, under its latest name (which
    ``report`` then carries too: a node that never replied has only its node's name)."""
    view = clients.setdefault(report.node_id, ClientLedgerView(report.client_id))
    if report.client_id != unnamed_client(report.node_id):
        view.client_id = report.client_id
    report.client_id = view.client_id
    return view


def record_training(clients: dict[int, ClientLedgerView], reports: list[ClientReport]) -> None:
    """What each client published about its local round: its epsilon, steps and
    mechanism; a client that declined has exhausted its budget."""
    for report in reports:
        view = _client_view(clients, report)
        if report.epsilon is not None:
            view.epsilon = max(view.epsilon, report.epsilon)
        if "steps" in report.public:  # it trained, whether or not its update was used
            view.rounds_trained += 1
            view.steps += int(report.public["steps"])
            view.mechanism = {k: v for k, v in report.public.items() if k != "steps"}
        if report.status == "declined":
            view.exhausted = True
            log.warning("%s", report.reason)


def record_outcome(
    clients: dict[int, ClientLedgerView], reports: list[ClientReport], server_round: int
) -> None:
    """Each client's final status in round ``server_round`` and its epsilon after it."""
    for report in reports:
        view = _client_view(clients, report)
        view.last_status = report.status
        if report.epsilon is not None:
            view.epsilon_by_round[server_round] = view.epsilon
        if report.status == "failed":
            log.error("%s failed in round %d: %s", report.client_id, server_round, report.reason)


def run_federation(
    grid: Grid,
    config: RunConfig,
    workflow: PlainWorkflow | SecureWorkflow | None = None,
    on_round: RoundCallback | None = None,
    node_wait_timeout: float = 120.0,
    round_timeout: float | None = None,
    population: int = 0,
) -> dict:
    """Run ``config.num_server_rounds`` rounds; write and return the run summary.
    ``population``: the number of client nodes when it is known (a simulation's), for
    round 1 to sample from all of them (:func:`wait_for_nodes`)."""
    started = time.perf_counter()
    workflow = workflow or make_workflow(config)
    client_level = (
        ClientLevelAccountant(config.client_noise_multiplier, config.client_clip_norm,
                              config.delta, config.accountant)
        if config.client_dp else None
    )
    scenario = SCENARIOS[config.scenario]
    test = load_dataset(scenario.dataset, config.data_root or None, config.seed).test
    test_inputs = model_inputs(test.images, config.model)
    shape, num_classes = tuple(test_inputs.shape[1:]), len(test.classes)
    weights = initial_weights(config, shape, num_classes)
    model = build_model(shape, num_classes, config.activation, config.model)
    optimizer = ServerOptimizer(
        config.server_optimizer, config.server_learning_rate, config.server_momentum
    )
    ema = ParameterEMA(config.server_ema)  # decay 0: the released model is the latest
    released = weights
    run_id = new_run_id(config.scenario)
    results = RunResults(Path(config.out_dir) / run_id)
    ledger = CoordinatorLedger(results.directory)
    clients: dict[int, ClientLedgerView] = {}
    rng = random.Random(config.seed)
    rounds: list[RoundRecord] = []
    stop_reason = "completed all rounds"
    accuracy = loss = float("nan")

    node_ids = wait_for_nodes(grid, config.min_train_clients, node_wait_timeout, population)
    log.info("%d client nodes connected; run %s", len(node_ids), run_id)
    timeout = round_timeout if round_timeout is not None else config.round_timeout or None
    cohort = sample_cohort(grid, config, clients, rng, 1)
    for server_round in range(1, config.num_server_rounds + 1):
        round_start = time.perf_counter()
        if cohort.stop:
            stop_reason = cohort.stop
            break
        node_ids, sampled, eligible = cohort.node_ids, cohort.sampled, cohort.eligible
        train_config = {**config.to_flower(), "server-round": server_round, "run-id": run_id}
        # Each client's reply then carries only the ledger entries the merged copy lacks.
        held = {n: ledger.held(clients[n].client_id) for n in sampled if n in clients}
        arrays = to_record(weights)
        planned: list[Cohort | None] = []
        merging: list[Future[None]] = []

        def next_cohort(reports: list[ClientReport], server_round: int = server_round) -> list[int]:
            """The next round's cohort, sampled once this round's training reports have
            settled the clients' budgets (the workflow may ask before its last stage);
            the reports' ledger entries start merging then."""
            record_training(clients, reports)
            merging.append(in_background(lambda: ledger.receive(reports, server_round),
                                         f"ledger-merge-{server_round}"))
            upcoming = None
            if server_round < config.num_server_rounds and any(
                    r.status not in ("failed", "dropped") for r in reports):
                upcoming = sample_cohort(grid, config, clients, rng, server_round + 1)
            planned.append(upcoming)
            return upcoming.sampled if upcoming is not None else []

        try:
            aggregate = workflow.run_round(
                grid, sampled, arrays, train_config, server_round,
                timeout=timeout, per_node=held, next_cohort=next_cohort,
            )
            if not planned:
                next_cohort(aggregate.reports)
        finally:  # committed before anything else happens, whatever the round's fate
            for merge in merging:
                merge.result()
        record_outcome(clients, aggregate.reports, server_round)
        trained = aggregate.trained
        every_client_failed = all(r.status in ("failed", "dropped") for r in aggregate.reports)
        if planned[0] is not None:  # None after the last round, or when every client failed
            cohort = planned[0]
            if not cohort.stop and not every_client_failed:
                # The workflow may start the next round's model-free stages (if it has not
                # already) while this round's model is updated and evaluated.
                workflow.prepare_round(grid, cohort.sampled, arrays, server_round + 1, timeout)
        if every_client_failed:
            reasons = "; ".join(sorted({r.reason for r in aggregate.reports}))
            raise FederationError(
                f"every sampled client failed or dropped in round {server_round}: {reasons}"
            )
        if aggregate.aborted:
            log.error("round %d aborted: %s; the global model is unchanged",
                      server_round, aggregate.aborted)
        elif trained:
            weights = optimizer.step(weights, aggregate.mean_update())
        if client_level is not None:
            account_client_level(client_level, server_round, aggregate, sampled, eligible)
        released = ema.update(weights)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in released.items()})
        loss, accuracy = evaluate(model, test_inputs, test.labels)
        val_examples = aggregate.metric_sums.get("val-examples", 0.0)
        record = RoundRecord(
            server_round=server_round,
            accuracy=accuracy,
            loss=loss,
            epsilon_max=max((c.epsilon for c in clients.values()), default=0.0),
            trained=len(trained),
            declined=sum(r.status == "declined" for r in aggregate.reports),
            failed=sum(r.status in ("failed", "dropped") for r in aggregate.reports),
            seconds=time.perf_counter() - round_start,
            train_seconds=aggregate.metric_sums.get("train-seconds", 0.0),
            val_accuracy=(aggregate.metric_sums["val-accuracy"] / val_examples
                          if val_examples else float("nan")),
            reports=aggregate.reports,
        )
        rounds.append(record)
        results.record_round(record)
        if on_round is not None:
            on_round(record)

    results.save_model(released)
    summary = {
        "run_id": run_id,
        "results_dir": str(results.directory),
        "scenario": config.scenario,
        "accuracy": accuracy,
        "loss": loss,
        "epsilon_max": max((c.epsilon for c in clients.values()), default=0.0),
        "delta": config.delta if config.dp else None,
        "dp": config.dp,
        "rounds_completed": len(rounds),
        "clients": len(node_ids),
        "seconds": time.perf_counter() - started,
        "stop_reason": stop_reason,
        "config": config.to_flower(),
        **workflow.describe(),
        "ledger": ledger.describe(),
        "client_level_epsilon": client_level.to_dict() if client_level is not None else None,
        "client_epsilon": {
            c.client_id: {"final": c.epsilon, "rounds_trained": c.rounds_trained,
                          "steps": c.steps, **c.mechanism,
                          "by_round": {str(k): v for k, v in sorted(c.epsilon_by_round.items())}}
            for c in sorted(clients.values(), key=lambda c: c.client_id)
        },
        "rounds": [round_record_dict(r) for r in rounds],
    }
    results.write_summary(summary)
    return summary
