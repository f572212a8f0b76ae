"""The client's side of secure aggregation (SecAgg+) as Flower Message handlers.

A round is four Message rounds (Bonawitz et al., CCS 2017; Bell et al., CCS 2020; the
messages are listed in :mod:`task.secagg_wire`):

1. ``secagg_setup``: the node trains locally (DP-SGD, its budget charged as in the plain
   round, by ``client.app``), then :func:`share_keys` turns the update into the input
   vector -- clipped and noised first when client-level DP is on -- keeps it in
   ``context.state`` and publishes two fresh X25519 public keys;
2. ``secagg_share_secrets`` (:func:`share_secrets`): Shamir shares of the self-mask seed and
   of the mask key go to the neighbours, encrypted end to end (AES-GCM);
3. ``secagg_masked_input`` (:func:`mask_input`): the input leaves the node, quantised and
   masked; the unmasked copy is deleted;
4. ``secagg_unmask`` (:func:`unmask`): shares that let the server remove the masks of the
   sum (never both kinds for one client), after which every secret is wiped.

Order matters for privacy: sample-level noise (DP-SGD), then client-level clipping and
noise (:mod:`privacy.distributed_dp`), then masking. Between stages the protocol state,
private keys included, stays in ``context.state`` on this node. A protocol error (a
tampered share, a round below threshold) makes the node leave the round: it forgets its
secrets and answers ``failed`` with the reason, which the server counts as a dropout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.data import node_client_id
from client.local_round import LocalRoundOutcome
from client.replies import public_metrics, status_reply
from privacy.distributed_dp import add_noise_share, clip_to_norm, noise_share_std
from privacy.secagg import (
    ForwardedShares,
    NeighbourKeys,
    SecAggClient,
    SecAggError,
    SecAggProtocolError,
    SetupMessage,
    UnmaskRequest,
)
from task.config import RunConfig
from task.secagg_wire import RECIPIENT_KEY, from_records, to_records
from task.secure_vector import VectorLayout

__all__ = ["secure_input", "share_keys", "share_secrets", "mask_input", "unmask"]

# Private keys and shares: they never leave the node.
STATE_KEY = "secagg-client"
# The unmasked input, from training until it is masked.
INPUT_KEY = "secagg-input"


def secure_input(
    outcome: LocalRoundOutcome, config: RunConfig, layout: VectorLayout, expected_clients: int
) -> np.ndarray:
    """What this client adds to the secure sum (see :mod:`task.secure_vector`).

    With client-level DP the update is first clipped to L2 norm ``C`` and given its noise
    share ``N(0, (sigma C)^2 / n)``, ``n`` being the cohort size, so the shares of the whole
    cohort add up to noise of std ``sigma C`` (Kairouz et al. 2021).
    """
    update = layout.flatten(outcome.update)
    if config.client_dp:
        clip = config.client_clip_norm
        std = noise_share_std(config.client_noise_multiplier, clip, expected_clients)
        update = add_noise_share(clip_to_norm(update, clip), std)
    return layout.pack(update, outcome.metrics)


def share_keys(
    msg: Message, context: Context, config: RunConfig, outcome: LocalRoundOutcome
) -> Message:
    """Stage ``secagg_setup``, after local training: keep the input, publish fresh keys.

    The reply carries, in the clear, only the status and :data:`CLEAR_METRICS`.
    """
    client_id = node_client_id(context.node_config)
    _forget(context)
    try:
        setup = from_records(msg.content, SetupMessage)
        layout = VectorLayout.for_run(outcome.update, config)  # the model's names and shapes
        if setup.vector_length != layout.length:
            raise SecAggProtocolError(
                f"setup announces vectors of length {setup.vector_length}, this model and "
                f"its metrics need {layout.length}"
            )
        vector = secure_input(outcome, config, layout, len(setup.client_ids))
        client = SecAggClient(int(msg.content[RECIPIENT_KEY]["client-id"]))
        keys = client.share_keys(setup)
    except (SecAggError, ValueError) as error:
        return status_reply(msg, client_id, "failed", str(error), outcome.metrics)
    context.state[INPUT_KEY] = ArrayRecord({"input": Array(vector)})
    context.state[STATE_KEY] = ConfigRecord(client.state_dict())
    content = RecordDict(
        {
            "status": ConfigRecord({"client-id": client_id, "status": "trained"}),
            "metrics": MetricRecord(public_metrics(outcome.metrics)),
            **to_records(keys),
        }
    )
    return Message(content=content, reply_to=msg)


def share_secrets(msg: Message, context: Context) -> Message:
    """Stage ``secagg_share_secrets``: encrypted Shamir shares for the neighbours."""
    return _advance(
        msg, context, lambda client: client.share_secrets(from_records(msg.content, NeighbourKeys))
    )


def mask_input(msg: Message, context: Context) -> Message:
    """Stage ``secagg_masked_input``: the quantised, masked input; the plain copy is deleted."""

    def step(client: SecAggClient) -> Any:
        if INPUT_KEY not in context.state:
            raise SecAggProtocolError(f"client {client.client_id}: no input kept for this round")
        vector = context.state[INPUT_KEY]["input"].numpy()
        masked = client.mask_input(from_records(msg.content, ForwardedShares), vector)
        del context.state[INPUT_KEY]
        return masked

    return _advance(msg, context, step)


def unmask(msg: Message, context: Context) -> Message:
    """Stage ``secagg_unmask``: the requested shares; then every secret of the round is wiped."""
    reply = _advance(
        msg, context, lambda client: client.unmask(from_records(msg.content, UnmaskRequest))
    )
    _forget(context)
    return reply


def _advance(msg: Message, context: Context, step: Callable[[SecAggClient], Any]) -> Message:
    """Restore the protocol state, run one stage, save the state; leave the round on error."""
    client_id = node_client_id(context.node_config)
    try:
        if STATE_KEY not in context.state:
            raise SecAggProtocolError("no secure aggregation round in progress on this node")
        client = SecAggClient.from_state_dict(dict(context.state[STATE_KEY]))
        reply = step(client)
    except SecAggError as error:
        _forget(context)
        return status_reply(msg, client_id, "failed", str(error))
    context.state[STATE_KEY] = ConfigRecord(client.state_dict())
    content = RecordDict(
        {"status": ConfigRecord({"client-id": client_id, "status": "ok"}), **to_records(reply)}
    )
    return Message(content=content, reply_to=msg)


def _forget(context: Context) -> None:
    for key in (STATE_KEY, INPUT_KEY):
        if key in context.state:
            del context.state[key]
