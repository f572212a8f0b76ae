"""Messages run on the client actors in batches: fewer Ray calls, the same replies."""

from __future__ import annotations

from queue import Queue

import numpy as np
import pytest
import ray
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

from server.federation import wait_for_nodes
from server.messaging import send_and_receive
from simulations import batching
from simulations.actor import ClientFailure, run_jobs
from simulations.run import run_apps
from simulations.startup import ACTOR_RUNS
from tests.simulations.actor_probe import probe_client

pytestmark = pytest.mark.usefixtures("server_identity")


def _queue(n: int) -> Queue[Message]:
    queue: Queue[Message] = Queue()
    for k in range(n):
        queue.put(Message(RecordDict({"c": ConfigRecord({"k": k})}), dst_node_id=k + 1,
                          message_type="train"))
    return queue


def test_a_worker_takes_its_guided_share_of_the_queue() -> None:
    queue = _queue(100)
    first = queue.get()
    batch = batching.take_batch(queue, workers=2, first=first)
    assert batch[0] is first
    assert len(batch) == 1 + 25  # ceil(99 / 4)
    assert [m.content["c"]["k"] for m in batch] == list(range(26))
    second = batching.take_batch(queue, workers=2, first=queue.get())
    assert len(second) == 1 + 19  # ceil(74 / 4): the shares shrink as the queue empties
    assert queue.qsize() == 100 - 26 - 20


def test_a_batch_is_at_most_max_batch_and_a_lone_message_goes_alone() -> None:
    queue = _queue(1000)
    assert len(batching.take_batch(queue, workers=1, first=queue.get())) == batching.MAX_BATCH
    lone = _queue(1)
    assert len(batching.take_batch(lone, workers=2, first=lone.get())) == 1


def test_a_batch_stays_within_what_ray_passes_inline() -> None:
    queue = _queue(100)
    heavy = batching.BATCH_BYTES // 5 + 1  # each message and its context: five do not fit
    assert len(batching.take_batch(queue, workers=1, first=queue.get(), first_bytes=heavy)) == 4
    huge = batching.BATCH_BYTES * 2  # one alone is over: it still goes, alone
    assert len(batching.take_batch(queue, workers=1, first=queue.get(), first_bytes=huge)) == 1


def test_payload_bytes_counts_the_arrays_of_a_record_dict() -> None:
    records = RecordDict({"a": ArrayRecord({"x": Array(np.zeros(1000, np.float32))}),
                          "c": ConfigRecord({"k": 1})})
    assert 4000 <= batching.payload_bytes(records) < 4000 + 1024  # the data and its header
    assert batching.payload_bytes(RecordDict({"c": ConfigRecord({"k": 1})})) == 0


@pytest.mark.slow
def test_replies_contexts_and_errors_are_each_messages_own() -> None:
    clients, rounds = 12, 2
    replies: list[list[Message]] = []
    calls: list[int] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = wait_for_nodes(grid, clients, timeout=120)
        for _ in range(rounds):
            messages = [Message(RecordDict({"config": ConfigRecord({
                "fail": node == nodes[0] and not replies})}), dst_node_id=node,
                message_type="train") for node in nodes]
            replies.append(sorted(send_and_receive(grid, messages),
                                  key=lambda m: nodes.index(m.metadata.src_node_id)))
        calls.append(sum(e.get("cat") in ACTOR_RUNS for e in ray.timeline()))

    run_apps(server, probe_client, clients)
    first, second = replies
    assert len(first) == len(second) == clients
    failed, *answered = first
    assert failed.has_error() and failed.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "the probe was asked to fail" in failed.error.reason
    assert [int(m.content["node"]["answered"]) for m in answered] == [1] * (clients - 1)
    # A failed message leaves its node's Context as it was, as in Flower's engine.
    assert [int(m.content["node"]["answered"]) for m in second] == [1] + [2] * (clients - 1)
    assert calls[0] < clients * rounds  # several messages per Ray call


def _context(node_id: int) -> Context:
    return Context(run_id=1, node_id=node_id, node_config={}, state=RecordDict(), run_config={})


def _probe_message(node_id: int, fail: bool) -> Message:
    return Message(RecordDict({"config": ConfigRecord({"fail": fail})}), dst_node_id=node_id,
                   message_type="train")


def test_a_nodes_jobs_in_one_batch_run_as_they_would_one_at_a_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = [(_probe_message(1, False), _context(1)), (_probe_message(2, True), _context(2)),
            (_probe_message(1, True), _context(1)), (_probe_message(1, False), _context(1))]
    first, failed, failed_again, last = run_jobs(probe_client, jobs)
    assert int(first[0].content["node"]["answered"]) == 1
    assert isinstance(failed, ClientFailure) and isinstance(failed_again, ClientFailure)
    assert failed.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "Traceback" not in failed.reason  # the reason is for the server's report
    assert "the ClientApp failed on node 2" in caplog.text  # the traceback, for the log
    assert "RuntimeError: the probe was asked to fail" in caplog.text
    # Node 1's third job saw its first job's context, not the failed second one's.
    assert int(last[0].content["node"]["answered"]) == 2
    assert int(last[1].state["probe"]["answered"]) == 2
