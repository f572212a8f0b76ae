"""Hand messages to simulated clients in one pass per poll, not one pass per client.

Flower 1.42's simulation engine moves the ServerApp's messages to the client actors with
``vce_api.add_messages_to_queue``: every 0.1 s it calls ``state.get_message_ins(node)``
for *every* registered node, and each call walks *every* stored message, checking its
expiry and federation membership. A poll therefore costs O(N * M) for N virtual clients
and M messages in flight, all under the link state's lock and the GIL: at 100 clients
it took a quarter of the main process's CPU (and blocked the server thread meanwhile),
and at 10,000 clients one poll takes seconds, so the population, not the clients sampled
per round, sets the round time.

:func:`dispatch_pending` does the same work in O(M) per poll: one walk over the stored
messages, the same validity check per undelivered message (``_check_stored_messages``;
a delivered one is checked again when the server pulls its reply), at most one
undelivered message per node per poll (as Flower does), each marked delivered exactly
as ``get_message_ins`` marks it. :func:`install` puts it in place of Flower's function
for in-process simulations (:func:`simulations.run.simulate`); the first poll checks that
the link state still has the attributes it relies on and falls back to Flower's own
per-node polling if it does not, so a Flower upgrade can make this slower, never wrong.

Neither side waits for a poll to notice a message. The link state's two stores are
wrapped (:func:`signal_stores`): a message the server stores wakes the dispatcher, and a
reply a client's worker stores wakes the server's pull (``server.messaging.REPLY_LANDED``).
Polling at a fixed pace, each of a round's Message rounds (four with secure aggregation)
waited half a poll on average at each end.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from queue import Queue
from typing import Any

from flwr.app import Message
from flwr.server.superlink.fleet.vce import vce_api
from flwr.supercore.date import now

from server.messaging import REPLY_LANDED

#: What dispatch_pending needs of the link state (Flower's InMemoryLinkState).
_REQUIRED = ("lock", "message_ins_store", "_check_stored_messages", "store_message_ins",
             "store_message_res")

_flower_dispatch = vce_api.add_messages_to_queue
#: Seconds between polls when nothing wakes the dispatcher sooner (Flower polls every 0.1
#: s): a poll also drops expired messages and hands out a node's second message, if any.
POLL_INTERVAL = 0.05


def take_undelivered(state: Any, nodes: Mapping[int, Any]) -> list[Message]:
    """Mark and return, for each node of ``nodes``, its oldest undelivered valid message.

    Equivalent to ``[m for n in nodes for m in state.get_message_ins(n, limit=1)]`` on
    Flower's in-memory link state, in one pass over the stored messages.
    """
    taken: dict[int, Message] = {}
    with state.lock:
        for message_id, message in list(state.message_ins_store.items()):
            if message.metadata.delivered_at != "":
                continue  # awaiting its reply; checked when the server pulls it
            state._check_stored_messages({message_id})  # expired or foreign: deleted
            if message_id not in state.message_ins_store:
                continue
            destination = message.metadata.dst_node_id
            if destination in nodes and destination not in taken:
                taken[destination] = message
        delivered_at = now().isoformat()
        for message in taken.values():
            message.metadata.delivered_at = delivered_at
    return list(taken.values())


def signal_stores(state: Any, stored: threading.Event) -> None:
    """Wrap ``state``'s stores: ``stored`` is set after the server stores a message, and
    ``server.messaging.REPLY_LANDED`` after a reply is stored."""
    store_message_ins, store_message_res = state.store_message_ins, state.store_message_res

    def store_and_signal_ins(message: Message) -> Any:
        result = store_message_ins(message)
        stored.set()
        return result

    def store_and_signal_res(message: Message) -> Any:
        result = store_message_res(message)
        REPLY_LANDED.set()
        return result

    state.store_message_ins = store_and_signal_ins
    state.store_message_res = store_and_signal_res


def dispatch_pending(
    state: Any, queue: Queue[Message], nodes: Mapping[int, Any], f_stop: threading.Event
) -> None:
    """Drop-in for ``vce_api.add_messages_to_queue``: hand out messages as the server
    stores them (and every :data:`POLL_INTERVAL` seconds) until stopped."""
    if not all(hasattr(state, name) for name in _REQUIRED):
        _flower_dispatch(state, queue, nodes, f_stop)
        return
    stored = threading.Event()
    signal_stores(state, stored)
    while not f_stop.is_set():
        stored.clear()  # before the walk: a message stored during it wakes the wait below
        for message in take_undelivered(state, nodes):
            queue.put(message)
        stored.wait(POLL_INTERVAL)


def install() -> None:
    """Use :func:`dispatch_pending` in Flower's simulation engine (idempotent)."""
    vce_api.add_messages_to_queue = dispatch_pending
