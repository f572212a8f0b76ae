"""The one-pass dispatcher hands out exactly what Flower's per-node polling would."""

from __future__ import annotations

import threading
import time
from queue import Queue

from flwr.app import ConfigRecord, Message, RecordDict
import pytest
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from server.messaging import REPLY_LANDED
from simulations import dispatch

pytestmark = pytest.mark.usefixtures("server_identity")


def _federation(num_nodes: int, messages_per_node: dict[int, int]):
    """A real in-memory link state with registered nodes and messages pushed by a Grid."""
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    nodes = vce_api._register_nodes(num_nodes, factory)
    state = factory.state()
    run = Run.create_empty(run_id=7)
    run.primary_task_id = 11
    run.federation_id = NOOP_FEDERATION_ID
    state.run_ids[run.run_id] = RunRecord(run=run)
    state.task_store[11] = Task(task_id=11, run_id=run.run_id)
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    node_ids = sorted(nodes)
    outgoing = [
        Message(RecordDict({"c": ConfigRecord({"k": k})}), dst_node_id=node_ids[i],
                message_type="train")
        for i, count in messages_per_node.items() for k in range(count)
    ]
    pushed = list(grid.push_messages(outgoing))
    return state, nodes, node_ids, pushed


def test_takes_one_oldest_message_per_node_per_poll_like_flower() -> None:
    plan = {0: 2, 3: 1, 4: 3}  # node index -> messages addressed to it
    ours_state, ours_nodes, ours_ids, _ = _federation(6, plan)
    flower_state, flower_nodes, flower_ids, _ = _federation(6, plan)

    for _ in range(4):  # more polls than any node has messages
        ours = dispatch.take_undelivered(ours_state, ours_nodes)
        flower = [m for n in flower_nodes for m in flower_state.get_message_ins(node_id=n, limit=1)]
        assert sorted((ours_ids.index(m.metadata.dst_node_id), m.content["c"]["k"]) for m in ours) \
            == sorted((flower_ids.index(m.metadata.dst_node_id), m.content["c"]["k"]) for m in flower)
        assert all(m.metadata.delivered_at for m in ours)
    assert dispatch.take_undelivered(ours_state, ours_nodes) == []


def test_skips_nodes_outside_the_mapping_and_delivers_each_message_once() -> None:
    state, nodes, node_ids, pushed = _federation(3, {0: 1, 1: 1, 2: 1})
    some = {node_ids[0]: 0, node_ids[2]: 2}
    first = dispatch.take_undelivered(state, some)
    assert {m.metadata.dst_node_id for m in first} == {node_ids[0], node_ids[2]}
    rest = dispatch.take_undelivered(state, nodes)
    assert [m.metadata.dst_node_id for m in rest] == [node_ids[1]]
    assert {m.metadata.message_id for m in first + rest} == set(pushed)


def test_dispatch_loop_feeds_the_queue_until_stopped() -> None:
    state, nodes, _, pushed = _federation(4, {0: 1, 1: 1, 2: 1, 3: 1})
    queue: Queue[Message] = Queue()
    stop = threading.Event()
    worker = threading.Thread(target=dispatch.dispatch_pending, args=(state, queue, nodes, stop))
    worker.start()
    received = [queue.get(timeout=5) for _ in pushed]
    stop.set()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert {m.metadata.message_id for m in received} == set(pushed)


def test_install_replaces_flowers_dispatcher() -> None:
    original = vce_api.add_messages_to_queue
    try:
        dispatch.install()
        assert vce_api.add_messages_to_queue is dispatch.dispatch_pending
    finally:
        vce_api.add_messages_to_queue = original


def test_a_stored_message_wakes_the_dispatcher_and_a_stored_reply_wakes_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "POLL_INTERVAL", 8.0)  # only a wake-up is in time
    state, nodes, node_ids, _ = _federation(2, {})
    queue: Queue[Message] = Queue()
    stop = threading.Event()
    worker = threading.Thread(target=dispatch.dispatch_pending, args=(state, queue, nodes, stop))
    worker.start()
    try:
        time.sleep(0.2)  # the dispatcher's first walk found nothing; it now waits
        message = Message(RecordDict({"c": ConfigRecord({"k": 1})}), dst_node_id=node_ids[0],
                          message_type="train")
        message.metadata.__dict__["_run_id"] = 7
        message.metadata.__dict__["_message_id"] = message.object_id
        state.store_message_ins(message)
        delivered = queue.get(timeout=4)
        assert delivered.metadata.message_id == message.metadata.message_id
        REPLY_LANDED.clear()
        reply = Message(RecordDict({"r": ConfigRecord({"k": 1})}), reply_to=delivered)
        reply.metadata.__dict__["_message_id"] = reply.object_id
        state.store_message_res(reply)
        assert REPLY_LANDED.is_set()
    finally:
        stop.set()
        worker.join(timeout=30)
