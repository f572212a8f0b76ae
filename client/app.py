"""fedshield ClientApp: a hospital's or bank's node, training locally with DP-SGD."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.data import load_client_data
from client.local_round import LocalRoundError, run_local_round
from client.state import load_history, load_plan, save_history
from task.config import ConfigError, resolve_config
from task.records import from_record, to_record

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on local data and reply with the update."""
    server_round = int(msg.content["config"]["server-round"])
    settings = {k: v for k, v in msg.content["config"].items() if k != "server-round"}
    partition_id = int(context.node_config["partition-id"])
    client_id = f"client-{partition_id}"
    try:
        config = resolve_config(settings)
        data = load_client_data(partition_id, int(context.node_config["num-partitions"]), config)
        outcome = run_local_round(
            data=data,
            global_weights=from_record(msg.content["arrays"]),
            config=config,
            server_round=server_round,
            history=load_history(context.state),
            planned_noise=load_plan(context.state),
        )
    except (ConfigError, LocalRoundError) as error:
        return _status_reply(msg, client_id, "failed", str(error))

    save_history(context.state, outcome.history, outcome.plan_record)
    if outcome.declined:
        return _status_reply(msg, client_id, "declined", outcome.reason, outcome.metrics)
    content = RecordDict(
        {
            "update": to_record(outcome.update),
            "metrics": MetricRecord(outcome.metrics),
            "status": ConfigRecord({"client-id": client_id, "status": "trained"}),
        }
    )
    return Message(content=content, reply_to=msg)


def _status_reply(
    msg: Message, client_id: str, status: str, reason: str, metrics: dict | None = None
) -> Message:
    content = RecordDict(
        {
            "status": ConfigRecord({"client-id": client_id, "status": status, "reason": reason}),
            "metrics": MetricRecord(metrics or {}),
        }
    )
    return Message(content=content, reply_to=msg)
