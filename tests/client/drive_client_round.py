"""Drive the real ClientApp train handler for one round, as a separate process.

    python -m tests.client.drive_client_round LEDGER_DIR ROUND

Prints the reply's status, epsilon and ledger head as JSON. The crash test runs it with
``FEDSHIELD_FAULT=kill-after-charge``, so the process dies between charge and reply.
"""

from __future__ import annotations

import json
import sys

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.app import train
from task.config import resolve_config
from task.model import build_model
from task.records import to_record

RUN_CONFIG = {"scenario": "digits", "num-server-rounds": 3, "local-epochs": 1,
              "noise-multiplier": 1.5, "secure-aggregation": False}


def main(ledger_dir: str, server_round: int) -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    config = resolve_config(RUN_CONFIG)
    weights = {k: v.detach().numpy() for k, v in build_model((1, 32, 32), 10, config.activation).state_dict().items()}
    message = Message(
        content=RecordDict({
            "arrays": to_record(weights),
            "config": ConfigRecord({**config.to_flower(), "server-round": server_round, "run-id": "crash-run"}),
        }),
        dst_node_id=7,
        message_type=MessageType.TRAIN,
    )
    context = Context(run_id=1, node_id=7, state=RecordDict(), run_config={},
                      node_config={"partition-id": 0, "num-partitions": 4, "ledger-dir": ledger_dir})
    reply = train(message, context)
    print(json.dumps({
        "status": reply.content["status"]["status"],
        "epsilon": reply.content["metrics"]["epsilon"],
        "head-seq": reply.content["ledger"]["head-seq"],
    }))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
