"""An in-process stand-in for Flower's Grid that runs the real client handlers.

Messages go to ``client.app.app`` (the real ClientApp) with one real ``Context`` per node,
so secure-aggregation rounds exercise the server workflow, the wire format and the client
handlers with real cryptography, in milliseconds. Local training is replaced by synthetic
updates (the ``secagg_masked_input`` handler gets a made-up ``LocalRoundOutcome``); everything
after training is the production code path.

Fault injection: ``drop[action]`` holds nodes whose message for that action is never
delivered (they "crash"), ``drop_in_round[(server_round, action)]`` the same for one
round (a message's group id is its round); ``tamper(action, node, content)`` may rewrite a message's content
before it is delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import SimpleNamespace

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client import secure_aggregation
from client.app import app as client_app
from client.local_round import LocalRoundOutcome
from task import secagg_wire as wire
from task.config import DEFAULTS, RunConfig, resolve_config
from task.records import from_record

Tamper = Callable[[str, int, RecordDict], None]


def synthetic_outcome(
    arrays: dict[str, np.ndarray], partition: int, server_round: int, scale: float = 0.01
) -> LocalRoundOutcome:
    """A made-up local round: Gaussian update, metrics that depend on the partition."""
    gen = np.random.default_rng(1000 * server_round + partition)
    update = {k: (gen.normal(size=v.shape) * scale).astype(v.dtype) for k, v in arrays.items()}
    metrics = {
        "num-examples": 100 + 10 * partition,
        "train-loss": 2.0 - 0.1 * partition,
        "val-loss": 1.5 + 0.05 * partition,
        "val-accuracy": 0.4 + 0.05 * partition,
        "val-examples": 10 + partition,
        "train-seconds": 0.5 + partition,
        "epsilon": 0.1 * server_round,
        "steps": 4,
        "noise-multiplier": 1.1,
        "sample-rate": 0.25,
        "delta": 1e-5,
        "max-grad-norm": 1.0,
        "server-round": server_round,
    }
    return LocalRoundOutcome(history=[], metrics=metrics, update=update)


class InProcessGrid:
    """``send_and_receive`` by calling the ClientApp directly, node by node."""

    def __init__(self, num_nodes: int, tamper: Tamper | None = None) -> None:
        TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1
        self.nodes = [2**63 + 11 * i for i in range(num_nodes)]  # uint64 ids, like Flower's
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for i, node in enumerate(self.nodes)
        }
        self.drop: dict[str, set[int]] = {}
        self.drop_in_round: dict[tuple[int, str], set[int]] = {}
        self.tamper = tamper
        self.outcomes: dict[tuple[int, int], LocalRoundOutcome] = {}
        self.run = SimpleNamespace(run_id=1)
        self._replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Deliver each message at once; return the ids of those that will be answered
        (a dropped node's message is never answered: as if its timeout had passed)."""
        answered = []
        for i, message in enumerate(messages):
            action = message.metadata.message_type.split(".", 1)[1]
            node = message.metadata.dst_node_id
            server_round = int(message.metadata.group_id)
            if node in self.drop.get(action, set()) | self.drop_in_round.get(
                (server_round, action), set()
            ):
                continue
            message_id = f"{action}-{node}-{i}"
            message.metadata.__dict__["_message_id"] = message_id
            if self.tamper is not None:
                self.tamper(action, node, message.content)
            self._replies[message_id] = self._deliver(action, node, message)
            answered.append(message_id)
        return answered

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def _deliver(self, action: str, node: int, message: Message) -> Message:
        context = self.contexts[node]
        if action != wire.MASKED_INPUT:
            return client_app(message, context)
        known = DEFAULTS.to_flower()
        config = resolve_config(
            {k: v for k, v in message.content["config"].items() if k in known}
        )
        server_round = int(message.content["config"]["server-round"])
        outcome = synthetic_outcome(
            from_record(message.content["arrays"]),
            int(context.node_config["partition-id"]),
            server_round,
        )
        self.outcomes[(server_round, node)] = outcome
        return secure_aggregation.mask_input(message, context, config, outcome)


def flat_update(outcome: LocalRoundOutcome) -> np.ndarray:
    """The outcome's update as one float64 vector."""
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in outcome.update.values()])


def default_config(**overrides: object) -> RunConfig:
    """The digits scenario with ``overrides`` (kebab-case keys)."""
    return resolve_config({"scenario": "digits", **overrides})
