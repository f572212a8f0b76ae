"""fedshield ClientApp: a hospital's or bank's node, training locally with DP-SGD."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import secure_aggregation
from client.data import load_node_data, node_client_id
from client.ledger_charge import ROUND_KEYS, ClientLedger, with_ledger
from client.local_round import LocalRoundError, LocalRoundOutcome, run_local_round
from client.replies import status_reply
from client.state import load_plan, save_history
from privacy.ledger import LedgerError
from task import secagg_wire
from task.config import ConfigError, RunConfig, resolve_config
from task.heap import freeze_imported_objects
from task.records import from_record, to_record

app = ClientApp()
# Flower imports this module in each client process before its first message.
freeze_imported_objects()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on local data and reply with the update in the
    clear (plain aggregation, the ``--no-secagg`` baseline)."""
    trained = _train(msg, context)
    if isinstance(trained, Message):
        return trained
    _, outcome = trained
    if outcome.declined:
        return with_ledger(status_reply(msg, node_client_id(context.node_config), "declined",
                                        outcome.reason, outcome.metrics), outcome)
    content = RecordDict(
        {
            "update": to_record(outcome.update),
            "metrics": MetricRecord(outcome.metrics),
            "status": ConfigRecord({"client-id": node_client_id(context.node_config),
                                    "status": "trained"}),
        }
    )
    return with_ledger(Message(content=content, reply_to=msg), outcome)


@app.train(secagg_wire.SETUP)
def secagg_setup(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 1: fresh keys for the round."""
    return secure_aggregation.share_keys(msg, context)


@app.train(secagg_wire.SHARE_SECRETS)
def secagg_share_secrets(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 2: encrypted key shares for the neighbours (the round
    starts here for a node that published its keys in the round before)."""
    return secure_aggregation.share_secrets(msg, context)


@app.train(secagg_wire.MASKED_INPUT)
def secagg_masked_input(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 3: train, then send the update masked (a neutral input
    when the client declines) with the public keys of its next round; a client that
    cannot train leaves the round."""
    trained = _train(msg, context)
    if isinstance(trained, Message):
        secure_aggregation.leave(context)
        return trained
    return with_ledger(secure_aggregation.mask_input(msg, context, *trained), trained[1])


@app.train(secagg_wire.UNMASK)
def secagg_unmask(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 4: the shares that unmask the sum (and, when the node is
    sampled again, its next round's stage 2)."""
    return secure_aggregation.unmask(msg, context)


def _train(msg: Message, context: Context) -> tuple[RunConfig, LocalRoundOutcome] | Message:
    """Run the round's local training on the received global model (or decline it, when
    the client's budget would be exceeded); the accountant's history is saved before
    anything leaves the node. A status reply instead when the client cannot train."""
    server_round = int(msg.content["config"]["server-round"])
    settings = {k: v for k, v in msg.content["config"].items() if k not in ROUND_KEYS}
    client_id = node_client_id(context.node_config)
    try:
        config = resolve_config(settings)
        data = load_node_data(context.node_config, config)
        with ClientLedger.open(context.node_config, config, client_id,
                               msg.content["config"]) as ledger:
            outcome = run_local_round(
                data=data,
                global_weights=from_record(msg.content["arrays"]),
                config=ledger.config,  # with the client's own delta
                server_round=server_round,
                history=ledger.history(),  # the ledger, not Context.state, is the truth
                planned_noise=load_plan(context.state),
                budget=ledger.budget.epsilon,
            )
            ledger.charge(outcome, server_round)  # signed and on disk before any reply
            outcome.ledger = ledger.reply_fields(msg.content["config"])
    except (ConfigError, LocalRoundError, LedgerError) as error:
        return status_reply(msg, client_id, "failed", str(error))

    save_history(context.state, outcome.history, outcome.plan_record)
    return config, outcome
