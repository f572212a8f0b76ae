"""A ClientApp for tests/simulations/test_actor.py, in a module that imports nothing of
Flower's simulation package itself, so its replies can tell what the actor imported."""

from __future__ import annotations

import sys

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

probe_client = ClientApp()


@probe_client.train()
def report_imports(msg: Message, context: Context) -> Message:
    """Reply whether this process holds ``flwr.simulation`` and how many messages this
    node has answered (kept in its Context); raise if asked to."""
    answered = int(context.state["probe"]["answered"]) if "probe" in context.state else 0
    context.state["probe"] = ConfigRecord({"answered": answered + 1})
    if msg.content["config"]["fail"]:
        raise RuntimeError("the probe was asked to fail")
    loaded = any(name == "flwr.simulation" or name.startswith("flwr.simulation.")
                 for name in sys.modules)
    return Message(RecordDict({"imports": ConfigRecord({"flwr-simulation": loaded}),
                               "node": ConfigRecord({"answered": answered + 1})}),
                   reply_to=msg)
