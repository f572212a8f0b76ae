"""The client's side of secure aggregation (SecAgg+) as Flower Message handlers.

A round has four stages (Bonawitz et al., CCS 2017; Bell et al., CCS 2020; the messages
are listed in :mod:`task.secagg_wire`); for a client that stays in the cohort they take
two Message rounds, because stages 1-2 ride on stages 3-4 of the round before:

1. ``secagg_setup`` (:func:`share_keys`): two fresh X25519 public keys for the round;
   skipped by a client that published its keys in the round before (stage 3);
2. ``secagg_share_secrets`` (:func:`share_secrets`): Shamir shares of the self-mask seed and
   of the mask key go to the neighbours, encrypted end to end (AES-GCM). When the message
   carries the round's setup, the round starts here instead, with the key pairs the client
   made and published in its previous round (each pair serves one round). A client in
   the round before gets this stage inside that round's ``secagg_unmask`` message;
3. ``secagg_masked_input`` (:func:`mask_input`): the node trains locally (DP-SGD, its budget
   charged as in the plain round, by ``client.app``), turns the update into the input
   vector -- clipped and noised first when client-level DP is on -- and sends it
   quantised and masked, all in one handler. The reply also publishes the public keys of
   fresh key pairs for the client's next round, which wait, private halves and all, in
   ``context.state`` (replaced at every masked input, dropped when a round starts with
   ``secagg_setup``);
4. ``secagg_unmask`` (:func:`unmask`): shares that let the server remove the masks of the
   sum (never both kinds for one client), after which every secret of the round is
   wiped; then the next round's stage 2, if the message carries it.

Training happens in stage 3, as in Flower's own SecAgg+ workflow, so the unmasked input
exists only inside that handler: it is never kept in ``context.state``, which a
simulation carries to and from the client's worker with every message (keeping a 500 KB
input there cost a 100-client round about 0.2 s). A client whose budget would be exceeded
declines but still sends a *neutral* input -- zeros, weight zero, plus its noise share
under client-level DP -- so a decline is not a dropout: the round needs no mask recovery
for it and cannot fall below the threshold because of it.

Order matters for privacy: sample-level noise (DP-SGD), then client-level clipping and
noise (:mod:`privacy.distributed_dp`), then masking. Between stages the protocol state,
private keys included, stays in ``context.state`` on this node. A protocol error (a
tampered share, a round below threshold) or a failed local round makes the node leave the
round: it forgets its secrets and answers ``failed`` with the reason, which the server
counts as a dropout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.data import node_client_id
from client.local_round import LocalRoundOutcome
from client.replies import public_metrics, status_content
from privacy.distributed_dp import add_noise_share, clip_to_norm, noise_share_std
from privacy.secagg import (
    ForwardedShares,
    NeighbourKeys,
    RoundKeys,
    SecAggClient,
    SecAggError,
    SecAggProtocolError,
    SetupMessage,
    UnmaskRequest,
)
from task.config import RunConfig
from task.records import from_record
from task.secagg_wire import (
    NEXT_KEYS_KEY,
    RECIPIENT_KEY,
    SETUP_KEY,
    from_records,
    nest,
    next_round_part,
    to_records,
)
from task.secure_vector import VectorLayout

__all__ = ["secure_input", "share_keys", "share_secrets", "mask_input", "unmask", "leave"]

# Private keys and shares: they never leave the node.
STATE_KEY = "secagg-client"
PROTOCOL_STATE_FIELD = "msgpack"
# The key pairs published for the next round: the private halves never leave the node.
NEXT_KEYS_STATE_KEY = "secagg-next-keys"
# Their fields (:class:`RoundKeys`) under the names they have in that record.
_KEY_RECORD_NAMES = {"share_private": "share-private-key", "mask_private": "mask-private-key",
                     "share_public": "share-public-key", "mask_public": "mask-public-key"}


def secure_input(
    outcome: LocalRoundOutcome, config: RunConfig, layout: VectorLayout, expected_clients: int
) -> np.ndarray:
    """What this client adds to the secure sum (see :mod:`task.secure_vector`).

    With client-level DP the update is first clipped to L2 norm ``C`` and given its noise
    share ``N(0, (sigma C)^2 / n)``, ``n`` being the cohort size, so the shares of the whole
    cohort add up to noise of std ``sigma C`` (Kairouz et al. 2021).

    A declined round adds the neutral input: zeros, weight zero, and (under client-level
    DP) the noise share all the same, so the sum carries as much noise as if the client had
    trained.
    """
    if outcome.declined:
        update = np.zeros(layout.model_length)
    else:
        update = layout.flatten(outcome.update)
    if config.client_dp:
        clip = config.client_clip_norm
        std = noise_share_std(config.client_noise_multiplier, clip, expected_clients)
        update = add_noise_share(clip_to_norm(update, clip), std)
    if outcome.declined:  # weight, counts and metrics all zero
        return np.concatenate([update, np.zeros(layout.length - layout.model_length)])
    return layout.pack(update, outcome.metrics)


def share_keys(msg: Message, context: Context) -> Message:
    """Stage ``secagg_setup``: a fresh round on this node, its public keys published."""
    client_id = node_client_id(context.node_config)
    leave(context)
    context.state.pop(NEXT_KEYS_STATE_KEY, None)  # the server did not take them up
    try:
        client = SecAggClient(_recipient(msg.content))
        keys = client.share_keys(from_records(msg.content, SetupMessage))
    except (SecAggError, ValueError) as error:
        return Message(content=status_content(client_id, "failed", str(error)), reply_to=msg)
    return Message(content=_reply(context, client_id, client, keys), reply_to=msg)


def share_secrets(msg: Message, context: Context) -> Message:
    """Stage ``secagg_share_secrets``: encrypted Shamir shares for the neighbours; first, if
    the message carries the round's setup, the round starts with the published keys."""
    return Message(content=_share_secrets(msg.content, context), reply_to=msg)


def mask_input(
    msg: Message, context: Context, config: RunConfig, outcome: LocalRoundOutcome
) -> Message:
    """Stage ``secagg_masked_input``, after local training: the quantised, masked input,
    and the public keys of fresh pairs for the node's next round.

    ``outcome`` is the round just trained (or declined) on the model in ``msg``. The reply
    carries, in the clear, only the status, :data:`CLEAR_METRICS` and those public keys.
    """
    status = "declined" if outcome.declined else "trained"

    def step(client: SecAggClient) -> Any:
        setup = client.setup
        if setup is None:  # the state is saved only once keys are shared; never so
            raise SecAggProtocolError(f"client {client.client_id}: no round was set up")
        weights = outcome.update or from_record(msg.content["arrays"])
        layout = VectorLayout.for_run(weights, config)  # the model's names and shapes
        if setup.vector_length != layout.length:
            raise SecAggProtocolError(
                f"setup announces vectors of length {setup.vector_length}, this model and "
                f"its metrics need {layout.length}"
            )
        vector = secure_input(outcome, config, layout, len(setup.client_ids))
        return client.mask_input(from_records(msg.content, ForwardedShares), vector)

    content = _advance(msg.content, context, step, status, outcome)
    if content["status"]["status"] != "failed":
        content[NEXT_KEYS_KEY] = _publish_next_keys(context)
    return Message(content=content, reply_to=msg)


def unmask(msg: Message, context: Context) -> Message:
    """Stage ``secagg_unmask``: the requested shares, after which every secret of the
    round is wiped; then, if the message carries the next round's share secrets, that
    round starts with the keys published at the masked input, its shares beside the
    unmask response."""
    content = _advance(
        msg.content, context,
        lambda client: client.unmask(from_records(msg.content, UnmaskRequest)),
    )
    next_round = next_round_part(msg.content)
    if next_round is not None:
        content.update(nest(_share_secrets(next_round, context)))
    return Message(content=content, reply_to=msg)


def leave(context: Context) -> None:
    """Forget every secret of the round in progress on this node, if any."""
    if STATE_KEY in context.state:
        del context.state[STATE_KEY]


def _share_secrets(content: RecordDict, context: Context) -> RecordDict:
    """Stage ``secagg_share_secrets`` on a message's ``content``: the reply's content."""
    started = None
    if SETUP_KEY in content:
        leave(context)
        published = context.state.pop(NEXT_KEYS_STATE_KEY, None)  # each pair: one round
        try:
            if published is None:
                raise SecAggProtocolError("the round starts with published keys, and this "
                                          "node has none")
            started = SecAggClient(_recipient(content))
            started.share_keys(from_records(content, SetupMessage, key=SETUP_KEY),
                               RoundKeys(**{field: bytes(published[name])
                                            for field, name in _KEY_RECORD_NAMES.items()}))
        except (SecAggError, ValueError) as error:
            return status_content(node_client_id(context.node_config), "failed", str(error))
    return _advance(
        content, context,
        lambda client: client.share_secrets(from_records(content, NeighbourKeys)),
        client=started,
    )


def _publish_next_keys(context: Context) -> ConfigRecord:
    """Fresh key pairs for the node's next round: kept whole in ``context.state``
    (replacing any kept before); the public halves are returned."""
    keys = RoundKeys.fresh()
    context.state[NEXT_KEYS_STATE_KEY] = ConfigRecord(
        {name: getattr(keys, field) for field, name in _KEY_RECORD_NAMES.items()})
    return ConfigRecord({"share-public-key": keys.share_public,
                         "mask-public-key": keys.mask_public})


def _recipient(content: RecordDict) -> int:
    """This node's protocol id in the round ``content`` sets up."""
    if RECIPIENT_KEY not in content:
        raise SecAggProtocolError(f"the message has no '{RECIPIENT_KEY}' record")
    return int(content[RECIPIENT_KEY]["client-id"])


def _advance(
    content: RecordDict,
    context: Context,
    step: Callable[[SecAggClient], Any],
    status: str = "ok",
    outcome: LocalRoundOutcome | None = None,
    client: SecAggClient | None = None,
) -> RecordDict:
    """Restore the protocol state (unless ``client`` holds it), run one stage, save the
    state; leave the round on error. The reply's content."""
    client_id = node_client_id(context.node_config)
    try:
        if client is None:
            if STATE_KEY not in context.state:
                raise SecAggProtocolError("no secure aggregation round in progress on this node")
            client = _restore(context)
        reply = step(client)
    except (SecAggError, ValueError) as error:
        leave(context)
        return status_content(client_id, "failed", str(error),
                              outcome.metrics if outcome is not None else None)
    return _reply(context, client_id, client, reply, status, outcome)


def _save(context: Context, client: SecAggClient) -> None:
    """Keep the protocol state in ``context.state`` as one MessagePack value: a record of
    some thirty typed fields cost Flower's checks 0.06 ms at every save, twice a round."""
    context.state[STATE_KEY] = ConfigRecord(
        {PROTOCOL_STATE_FIELD: msgpack.packb(client.state_dict(), use_bin_type=True)})


def _restore(context: Context) -> SecAggClient:
    """The protocol state :func:`_save` kept.

    Raises:
        SecAggProtocolError: the kept state is not a MessagePack map.
    """
    unreadable = "the protocol state kept on this node is unreadable"
    raw = context.state[STATE_KEY].get(PROTOCOL_STATE_FIELD, b"")
    try:
        state = msgpack.unpackb(bytes(raw), raw=False)
    except ValueError as error:
        raise SecAggProtocolError(f"{unreadable} ({type(error).__name__})") from error
    if not isinstance(state, dict):
        # Its type only: the value may hold key material, and the reason goes to the server.
        raise SecAggProtocolError(f"{unreadable} (a {type(state).__name__}, not a map)")
    return SecAggClient.from_state_dict(state)


def _reply(
    context: Context,
    client_id: str,
    client: SecAggClient,
    protocol_message: Any,
    status: str = "ok",
    outcome: LocalRoundOutcome | None = None,
) -> RecordDict:
    """Save the protocol state (forget it once the round is done); the reply's content:
    the status (and, after training, the reason of a decline and the public metrics) and
    the protocol message."""
    if client.done:
        leave(context)
    else:
        _save(context, client)
    content = RecordDict(to_records(protocol_message))
    status_fields: dict[str, str] = {"client-id": client_id, "status": status}
    if outcome is not None:
        status_fields["reason"] = outcome.reason
        content["metrics"] = MetricRecord(public_metrics(outcome.metrics))
    content["status"] = ConfigRecord(status_fields)
    return content
