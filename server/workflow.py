"""How one round's training messages go out and their sum comes back.

A workflow sends the global model to the sampled nodes and returns only aggregates: the
weighted sum of updates, the total weight, sums of data-dependent metrics, and the few
values each client publishes in the clear (its identity, status and epsilon). The plain
workflow sums in the clear; the secure one returns the same totals without the server
ever holding an individual update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from server.messaging import send_and_receive
from task.ledger_wire import REPLY_RECORD
from task.secure_vector import PUBLIC_METRICS

log = logging.getLogger(__name__)

# Metrics a client reports that depend on its data: only their weighted sums leave the
# workflow (weight: the client's number of examples, or of validation examples).
SUMMED_METRICS = ("train-loss", "val-loss", "val-accuracy")


@dataclass
class ClientReport:
    """What one client publishes in the clear about a round."""

    node_id: int
    client_id: str
    # "trained" (its update is in the sum), "declined", "failed", "dropped" (no reply, or
    # left secure aggregation midway) or "aborted" (its round was abandoned)
    status: str
    epsilon: float | None = None
    reason: str = ""
    public: dict[str, float] = field(default_factory=dict)
    # The client's signed ledger entries, head and budget (client.ledger_charge), if sent.
    ledger: dict = field(default_factory=dict)


@dataclass
class RoundAggregate:
    """The round's totals over the clients that trained."""

    update_sum: dict[str, np.ndarray]
    weight_sum: float
    metric_sums: dict[str, float]
    reports: list[ClientReport]
    aborted: str = ""  # why the round produced no aggregate ("" when it did)

    @property
    def trained(self) -> list[ClientReport]:
        return [r for r in self.reports if r.status == "trained"]

    def mean_update(self) -> dict[str, np.ndarray]:
        """The weighted mean update, sum_i n_i Delta_i / sum_i n_i."""
        return {k: v / self.weight_sum for k, v in self.update_sum.items()}


#: Given a round's training reports, the next round's cohort (empty: there is none). A
#: workflow may call it once, as soon as those reports are in, to start the next round's
#: model-free stages early (secure aggregation's key exchange).
NextCohort = Callable[[list[ClientReport]], Sequence[int]]


def node_config(config: dict, node_id: int, per_node: Mapping[int, dict] | None) -> ConfigRecord:
    """The round's training config for ``node_id``, with the entries meant for it alone."""
    return ConfigRecord({**config, **(per_node or {}).get(node_id, {})})


def train_messages(
    grid: Grid,
    node_ids: Sequence[int],
    arrays: ArrayRecord,
    config: dict,
    server_round: int,
    per_node: Mapping[int, dict] | None = None,
) -> list[Message]:
    """One training message per sampled node carrying the global model and the config
    (with ``per_node[node]`` added to that node's)."""
    return [
        Message(
            content=RecordDict({"arrays": arrays,
                                "config": node_config(config, node_id, per_node)}),
            message_type=MessageType.TRAIN,
            dst_node_id=node_id,
            group_id=str(server_round),
        )
        for node_id in node_ids
    ]


def unnamed_client(node_id: int) -> str:
    """The name of a node whose reply carried none (it failed or never replied)."""
    return f"node-{node_id}"


def parse_report(reply: Message, node_id: int) -> ClientReport:
    """The clear-text part of a client's reply (or of its error)."""
    if reply.has_error():
        return ClientReport(node_id, unnamed_client(node_id), "failed", reason=reply.error.reason)
    status = reply.content["status"]
    metrics = reply.content.get("metrics", {})
    epsilon = metrics.get("epsilon")
    return ClientReport(
        node_id=node_id,
        client_id=str(status["client-id"]),
        status=str(status["status"]),
        epsilon=None if epsilon is None else float(epsilon),
        reason=str(status.get("reason", "")),
        public={k: float(metrics[k]) for k in PUBLIC_METRICS if k in metrics},
        ledger=dict(reply.content[REPLY_RECORD]) if REPLY_RECORD in reply.content else {},
    )


class PlainWorkflow:
    """Sends training messages and sums the replies in the clear (the baseline)."""

    secure = False

    def describe(self) -> dict:
        return {"secure_aggregation": False}

    def prepare_round(
        self,
        grid: Grid,
        node_ids: Sequence[int],
        arrays: ArrayRecord,
        server_round: int,
        timeout: float | None = None,
    ) -> None:
        """Nothing to do ahead: a plain round is one Message round, and it needs the model."""

    def run_round(
        self,
        grid: Grid,
        node_ids: Sequence[int],
        arrays: ArrayRecord,
        config: dict,
        server_round: int,
        timeout: float | None = None,
        per_node: Mapping[int, dict] | None = None,
        next_cohort: NextCohort | None = None,
    ) -> RoundAggregate:
        """One round over ``node_ids``: the sums of the replies (``per_node[node]`` is added
        to that node's training config). ``next_cohort`` is not called: a plain round has
        nothing to start early."""
        messages = train_messages(grid, node_ids, arrays, config, server_round, per_node)
        replies = {m.metadata.src_node_id: m for m in send_and_receive(grid, messages, timeout)}
        reports: list[ClientReport] = []
        update_sum = {name: np.zeros_like(a.numpy()) for name, a in arrays.items()}
        weight_sum = 0.0
        metric_sums = {name: 0.0 for name in SUMMED_METRICS}
        metric_sums.update({"val-examples": 0.0, "train-seconds": 0.0})
        for node_id in node_ids:
            reply = replies.get(node_id)
            if reply is None:
                reports.append(ClientReport(node_id, unnamed_client(node_id), "dropped",
                                            reason="no reply before the timeout"))
                continue
            report = parse_report(reply, node_id)
            reports.append(report)
            if report.status != "trained":
                continue
            metrics = reply.content["metrics"]
            weight = float(metrics["num-examples"])
            for name, delta in reply.content["update"].items():
                update_sum[name] += weight * delta.numpy()
            weight_sum += weight
            val_weight = float(metrics.get("val-examples", 0))
            metric_sums["train-loss"] += weight * float(metrics["train-loss"])
            metric_sums["val-loss"] += val_weight * float(metrics["val-loss"]) if val_weight else 0.0
            metric_sums["val-accuracy"] += (
                val_weight * float(metrics["val-accuracy"]) if val_weight else 0.0
            )
            metric_sums["val-examples"] += val_weight
            metric_sums["train-seconds"] += float(metrics.get("train-seconds", 0.0))
        return RoundAggregate(update_sum, weight_sum, metric_sums, reports)
