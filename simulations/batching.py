"""Run a simulation's messages on the client actors in batches, not one Ray call each.

Flower's simulation engine (``vce_api.worker``) hands each message to an actor with its
own Ray call: the driver serialises the ClientApp loader, the message and the node's
``Context``, submits the call and waits for its reply before taking the next message.
A Message round to 100 clients with no client work thus took 0.15-0.2 s on two cores,
1.5-2 ms a message, nearly all of it the driver's side of the call, and secure
aggregation adds three such rounds to every round.

:func:`batched_worker` takes the place of Flower's worker, one per actor as Flower starts
them. It takes the next message and, from the messages queued behind it, a share of
``ceil(queued / (2 * actors))`` (guided self-scheduling: Polychronopoulos & Kuck, IEEE
Trans. Computers 1987), runs them on one actor with one call
(:meth:`simulations.actor.ClientAppActor.run_batch`), and stores each node's reply and
``Context`` as Flower's worker does. The shares shrink as the queue empties, so the
actors still finish a round together when clients' work differs. Each message keeps its
own result: a ClientApp that raises gives its node Flower's
``CLIENT_APP_RAISED_EXCEPTION`` reply and the rest of the batch runs, and a node's second
message in a batch sees the ``Context`` its first one left
(:func:`simulations.actor.run_jobs`); an actor that
fails outright gives every message of its batch an error reply, as Flower's engine
gives the one message it was running.
"""

from __future__ import annotations

import logging
import threading
import time
from queue import Empty, Queue
from typing import Any
from uuid import uuid4

import ray
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp.client_app import LoadClientAppError
from flwr.common.constant import ErrorCode
from flwr.server.superlink.fleet.vce import vce_api

from simulations.actor import ClientFailure
from simulations.cluster import INLINE_OBJECT_BYTES

log = logging.getLogger(__name__)

#: What batched_worker needs of Flower's Ray backend and its actor pool.
_BACKEND_REQUIRED = ("pool", "app_fn")
_POOL_REQUIRED = ("submit", "add_actor_back_to_pool", "num_actors")

_flower_worker = vce_api.worker
#: The most messages one Ray call carries.
MAX_BATCH = 64
#: The most array bytes (messages and contexts) one Ray call carries: what Ray passes
#: inline. A larger call goes through Ray's shared-memory object store, whose pages count
#: in every process that maps them: at 100 clients a round, the peak RSS of the process
#: tree was 3.6-3.8 GB with batches of 25 and 3.4-3.6 GB within this bound.
BATCH_BYTES = INLINE_OBJECT_BYTES


def payload_bytes(records: RecordDict) -> int:
    """Bytes of the arrays in ``records``: what dominates the size of a message's content
    or of a node's ``Context.state`` (models, updates, kept inputs)."""
    return sum(len(array.data) for record in records.values()
               if isinstance(record, ArrayRecord) for array in record.values())


def take_batch(queue: Queue[Message], workers: int, first: Message,
               first_bytes: int = 0) -> list[Message]:
    """``first`` and, from the messages queued now, its share ``ceil(queued / (2 *
    workers))``: at most :data:`MAX_BATCH` messages in all, and no more than fit
    :data:`BATCH_BYTES` if each weighs ``first_bytes`` (a Message round's messages and
    contexts are alike)."""
    fit = BATCH_BYTES // first_bytes if first_bytes > 0 else MAX_BATCH
    share = min(MAX_BATCH, max(fit, 1)) - 1
    share = min(share, -(-queue.qsize() // (2 * max(workers, 1))))
    batch = [first]
    for _ in range(share):
        try:
            batch.append(queue.get_nowait())
        except Empty:
            break
    return batch


def _error_reply(message: Message, code: int, reason: str) -> Message:
    return Message(Error(code=code, reason=reason), reply_to=message)


def _run_on_actor(backend: Any, batch: list[Message], contexts: list[Any]) -> list[Any]:
    """Run ``batch`` on one idle actor of ``backend``'s pool; each message's reply and
    context, or its ClientFailure."""
    pool = backend.pool
    jobs = list(zip(batch, contexts))
    future = pool.submit(lambda actor, app_fn, jobs_, _cid, _ctx:
                         actor.run_batch.remote(app_fn, jobs_), (backend.app_fn, jobs, "", None))
    try:
        return ray.get(future)
    finally:
        pool.add_actor_back_to_pool(future)


def batched_worker(
    messageins_queue: Queue[Message],
    messageres_queue: Queue[Message],
    node_info_store: dict[int, Any],
    backend: Any,
    f_stop: threading.Event,
    metrics: Any,
) -> None:
    """Drop-in for ``vce_api.worker``: run queued messages in batches until stopped."""
    pool = getattr(backend, "pool", None)
    if not (all(hasattr(backend, name) for name in _BACKEND_REQUIRED)
            and all(hasattr(pool, name) for name in _POOL_REQUIRED)):
        _flower_worker(messageins_queue, messageres_queue, node_info_store, backend,
                       f_stop, metrics)
        return
    while not f_stop.is_set():
        try:
            first = messageins_queue.get(timeout=1.0)
        except Empty:
            continue
        context = node_info_store[first.metadata.dst_node_id].retrieve_context(
            run_id=first.metadata.run_id)
        weight = payload_bytes(first.content) + payload_bytes(context.state)
        batch = take_batch(messageins_queue, pool.num_actors, first, weight)
        stores = [node_info_store[m.metadata.dst_node_id] for m in batch]
        contexts = [store.retrieve_context(run_id=m.metadata.run_id)
                    for store, m in zip(stores, batch)]
        started = time.perf_counter()
        try:
            results = _run_on_actor(backend, batch, contexts)
        except Exception as ex:  # the actor, not one ClientApp: each message reports it
            log.error("a batch of %d messages failed on its actor: %s", len(batch), ex)
            code = (ErrorCode.LOAD_CLIENT_APP_EXCEPTION if isinstance(ex, LoadClientAppError)
                    else ErrorCode.UNKNOWN)
            results = [ClientFailure.of(code, ex)] * len(batch)
        metrics.add_clientapp_runtime(time.perf_counter() - started)
        for message, store, result in zip(batch, stores, results):
            if isinstance(result, ClientFailure):
                reply = _error_reply(message, result.code, result.reason)
            else:
                reply, context = result
                store.update_context(message.metadata.run_id, context=context)
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            messageres_queue.put(reply)


def install() -> None:
    """Use :func:`batched_worker` in Flower's simulation engine (idempotent)."""
    vce_api.worker = batched_worker
