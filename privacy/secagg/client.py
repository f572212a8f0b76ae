"""The client side of SecAgg+ as a state machine with one method per stage.

One :class:`SecAggClient` serves one round. Its methods consume the server's message for a
stage and return the client's reply (see :mod:`privacy.secagg.messages`):

1. :meth:`SecAggClient.share_keys`: read the public round parameters, derive the
   neighbour graph, make two fresh X25519 key pairs -- ``(c^SK, c^PK)`` to encrypt shares,
   ``(s^SK, s^PK)`` to agree pairwise masks -- and publish the public halves.
2. :meth:`SecAggClient.share_secrets`: draw the self-mask seed ``b_u`` (32 bytes), Shamir-
   share ``b_u`` and ``s_u^SK`` with threshold ``t`` among the neighbourhood that
   published keys (itself included: it keeps its own share), and encrypt each neighbour's
   pair of shares with AES-256-GCM (:mod:`privacy.secagg.channel`), keeping the key that
   will open that neighbour's shares in return.
3. :meth:`SecAggClient.mask_input`: authenticate and decrypt the shares received from the
   neighbours that completed stage 2, quantise the update, and add the self mask and the
   pairwise masks with exactly those neighbours (:mod:`privacy.secagg.masking`).
4. :meth:`SecAggClient.unmask`: for each neighbour the server reports as a survivor, return
   the share of its self-mask seed; for each one reported as dropped, the share of its mask
   private key. Asking for both kinds for the same client is refused
   (:class:`SecAggProtocolError`): with both, the server could strip every mask from that
   client's input (Bonawitz et al., CCS 2017, section 4).

Each stage checks that at least ``t`` members of the client's neighbourhood (itself
included) are still alive and raises :class:`SecAggAbort` otherwise. All secrets come from
the injectable ``rng`` (``os.urandom`` by default). :meth:`SecAggClient.state_dict` and
:meth:`SecAggClient.from_state_dict` let a stateless Flower ``ClientApp`` keep the state
between stages in ``context.state`` (it contains private keys: it must stay on the node).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from privacy.secagg.channel import decrypt_shares, encrypt_shares, share_channel_keys
from privacy.secagg.config import validate_threshold
from privacy.secagg.errors import SecAggAbort, SecAggConfigError, SecAggProtocolError
from privacy.secagg.graph import build_neighbour_graph
from privacy.secagg.keys import (
    KEY_BYTES,
    Rng,
    new_private_key,
    private_key_from_bytes,
    public_key_bytes,
    random_bytes,
)
from privacy.secagg.masking import (
    expand_mask,
    pairwise_mask_key,
    pairwise_mask_sign,
    reduce_in_place,
    self_mask_key,
)
from privacy.secagg.messages import (
    EncryptedShares,
    ForwardedShares,
    MaskedInput,
    NeighbourKeys,
    PublicKeys,
    SetupMessage,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
)
from privacy.secagg.quantize import quantize, validate_quantization
from privacy.secagg.shamir import decode_share, encode_share, share_x, split_secret

__all__ = ["SecAggClient", "validate_setup", "RoundKeys"]

_NEW = "new"
_KEYS_SHARED = "keys_shared"
_SECRETS_SHARED = "secrets_shared"
_INPUT_MASKED = "input_masked"
_DONE = "done"
_STATES = (_NEW, _KEYS_SHARED, _SECRETS_SHARED, _INPUT_MASKED, _DONE)


def validate_setup(setup: SetupMessage) -> None:
    """Check the public round parameters (shared by client and server)."""
    ids = setup.client_ids
    if len(set(ids)) != len(ids) or list(ids) != sorted(ids):
        raise SecAggConfigError("client_ids must be sorted and distinct")
    if len(setup.graph_seed) != KEY_BYTES:
        raise SecAggConfigError(f"graph_seed must be {KEY_BYTES} bytes")
    if setup.vector_length < 1:
        raise SecAggConfigError(f"vector_length must be >= 1, got {setup.vector_length}")
    validate_quantization(
        clip_range=setup.clip_range,
        quant_bits=setup.quant_bits,
        modulus_bits=setup.modulus_bits,
        rounding=setup.rounding,
        num_clients=len(ids),
    )
    validate_threshold(setup.threshold, setup.degree + 1)


@dataclass(frozen=True)
class RoundKeys:
    """The two X25519 key pairs a client uses in one round, as raw 32-byte keys:
    ``(c_u^SK, c_u^PK)`` for the channel its shares travel in, ``(s_u^SK, s_u^PK)`` for its
    pairwise masks. The private halves never leave the node."""

    share_private: bytes
    mask_private: bytes
    share_public: bytes
    mask_public: bytes

    @classmethod
    def fresh(cls, rng: Rng = os.urandom) -> RoundKeys:
        """Two fresh pairs, private keys from ``rng``. Deriving a public key is a scalar
        multiplication, as costly as an agreement, so it is done here once per pair."""
        share, mask = new_private_key(rng), new_private_key(rng)
        return cls(share, mask, public_key_bytes(private_key_from_bytes(share)),
                   public_key_bytes(private_key_from_bytes(mask)))


class SecAggClient:
    """One client's view of one SecAgg+ round.

    Args:
        client_id: this client's id (an integer in ``[0, 2^64 - 1]``, e.g. Flower's node id).
        rng: source of secret randomness, ``rng(n) -> n bytes``; default :func:`os.urandom`.
    """

    def __init__(self, client_id: int, *, rng: Rng = os.urandom) -> None:
        self.client_id = int(client_id)
        self._rng = rng
        self._state = _NEW
        self._setup: SetupMessage | None = None
        self._neighbours: tuple[int, ...] = ()
        # Private keys as their 32 raw bytes, loaded only by the stage that uses them:
        # loading an X25519 key derives its public key, a scalar multiplication as costly
        # as an agreement, and the state is restored at every stage.
        self._share_key: bytes | None = None
        self._mask_key: bytes | None = None
        self._own_public_keys: tuple[bytes, bytes] = (b"", b"")  # (c_u^PK, s_u^PK)
        self._self_seed: bytes | None = None
        # Public keys of the neighbourhood members (itself included) that completed stage 1.
        self._share_pks: dict[int, bytes] = {}
        self._mask_pks: dict[int, bytes] = {}
        # Shares held for each owner (itself included): (share of b_owner, share of s^SK).
        self._held: dict[int, tuple[int, int]] = {}
        # Keys K_{v->u} that open each neighbour's shares, from stage 2 until stage 3.
        self._inbound_keys: dict[int, bytes] = {}
        self._revealed_seed: set[int] = set()
        self._revealed_key: set[int] = set()

    # ------------------------------------------------------------------ helpers
    @property
    def stage(self) -> str:
        """Where the client stands: new, keys_shared, secrets_shared, input_masked, done."""
        return self._state

    @property
    def done(self) -> bool:
        """Whether the round is over for this client (it answered ``unmask``)."""
        return self._state == _DONE

    @property
    def setup(self) -> SetupMessage | None:
        """The round's public parameters, once stage ``share_keys`` has read them."""
        return self._setup

    @property
    def neighbours(self) -> tuple[int, ...]:
        """This client's neighbours in the round's graph (itself excluded)."""
        return self._neighbours

    def _expect(self, state: str, stage: str) -> SetupMessage:
        if self._state != state:
            raise SecAggProtocolError(
                f"client {self.client_id}: stage '{stage}' is out of order "
                f"(client state is '{self._state}', expected '{state}')"
            )
        assert self._setup is not None or state == _NEW
        return self._setup  # type: ignore[return-value]

    def _check_context(self, setup: SetupMessage, msg: Any, recipient: int, stage: str) -> None:
        if msg.run_id != setup.run_id or msg.round_id != setup.round_id:
            raise SecAggProtocolError(
                f"client {self.client_id}: '{stage}' message is for run {msg.run_id!r} "
                f"round {msg.round_id}, this is run {setup.run_id!r} round {setup.round_id}"
            )
        if recipient != self.client_id:
            raise SecAggProtocolError(
                f"client {self.client_id}: '{stage}' message is addressed to client {recipient}"
            )

    def _require(self, stage: str, alive: int, threshold: int) -> None:
        if alive < threshold:
            raise SecAggAbort(stage, alive, threshold, client_id=self.client_id)

    def _wipe(self) -> None:
        self._share_key = self._mask_key = None
        self._self_seed = None
        self._held = {}
        self._inbound_keys = {}

    # ------------------------------------------------------------------ stages
    def share_keys(self, setup: SetupMessage, keys: RoundKeys | None = None) -> PublicKeys:
        """Stage ``share_keys``: validate the setup, make fresh key pairs, publish them.

        ``keys``: pairs made for this round beforehand (:meth:`RoundKeys.fresh`) and never
        used, instead of new ones.
        """
        self._expect(_NEW, Stage.SHARE_KEYS)
        validate_setup(setup)
        if self.client_id not in setup.client_ids:
            raise SecAggProtocolError(f"client {self.client_id} is not in the cohort")
        graph = build_neighbour_graph(
            setup.client_ids,
            setup.degree,
            setup.graph_seed,
            run_id=setup.run_id,
            round_id=setup.round_id,
        )
        self._setup = setup
        self._neighbours = graph[self.client_id]
        if keys is None:
            keys = RoundKeys.fresh(self._rng)
        self._share_key, self._mask_key = keys.share_private, keys.mask_private
        self._own_public_keys = (keys.share_public, keys.mask_public)
        self._state = _KEYS_SHARED
        return PublicKeys(
            run_id=setup.run_id,
            round_id=setup.round_id,
            client_id=self.client_id,
            share_public_key=self._own_public_keys[0],
            mask_public_key=self._own_public_keys[1],
        )

    def share_secrets(self, keys: NeighbourKeys) -> EncryptedShares:
        """Stage ``share_secrets``: Shamir-share ``b_u`` and ``s_u^SK``; encrypt per neighbour."""
        setup = self._expect(_KEYS_SHARED, Stage.SHARE_SECRETS)
        self._check_context(setup, keys, keys.recipient, Stage.SHARE_SECRETS)
        assert self._share_key is not None and self._mask_key is not None
        members = set(self._neighbours) | {self.client_id}
        ids = list(keys.client_ids)
        if len(set(ids)) != len(ids) or not set(ids) <= members:
            raise SecAggProtocolError(
                f"client {self.client_id}: key list has repeated ids or non-neighbours"
            )
        all_keys = list(keys.share_public_keys) + list(keys.mask_public_keys)
        if any(len(k) != KEY_BYTES for k in all_keys) or len(set(all_keys)) != len(all_keys):
            raise SecAggProtocolError(
                f"client {self.client_id}: public keys must be {KEY_BYTES} bytes and distinct"
            )
        share_pks = dict(zip(ids, keys.share_public_keys, strict=True))
        mask_pks = dict(zip(ids, keys.mask_public_keys, strict=True))
        own_share_pk, own_mask_pk = self._own_public_keys
        if self.client_id not in share_pks or not (
            hmac.compare_digest(share_pks[self.client_id], own_share_pk)
            and hmac.compare_digest(mask_pks[self.client_id], own_mask_pk)
        ):
            raise SecAggProtocolError(
                f"client {self.client_id}: the server did not echo this client's own keys"
            )
        self._require(Stage.SHARE_KEYS, len(ids), setup.threshold)

        holders = sorted(ids)
        xs = [share_x(v) for v in holders]
        self._self_seed = random_bytes(self._rng, KEY_BYTES)
        seed_shares = split_secret(self._self_seed, xs, setup.threshold, self._rng)
        key_shares = split_secret(self._mask_key, xs, setup.threshold, self._rng)
        share_key = private_key_from_bytes(self._share_key)
        out = []
        for v, seed_share, key_share in zip(holders, seed_shares, key_shares, strict=True):
            if v == self.client_id:
                self._held[v] = (seed_share, key_share)
                continue
            key, self._inbound_keys[v] = share_channel_keys(
                share_key,
                share_pks[v],
                run_id=setup.run_id,
                round_id=setup.round_id,
                client_id=self.client_id,
                peer_id=v,
            )
            out.append(
                encrypt_shares(
                    key=key,
                    run_id=setup.run_id,
                    round_id=setup.round_id,
                    sender=self.client_id,
                    recipient=v,
                    seed_share=seed_share,
                    key_share=key_share,
                    rng=self._rng,
                )
            )
        self._share_pks, self._mask_pks = share_pks, mask_pks
        self._state = _SECRETS_SHARED
        return EncryptedShares(setup.run_id, setup.round_id, self.client_id, out)

    def mask_input(self, shares: ForwardedShares, vector: np.ndarray) -> MaskedInput:
        """Stage ``collect_masked_input``: decrypt received shares, return the masked input.

        ``vector`` is the 1-D float update of length ``setup.vector_length``.

        Raises:
            SecAggTamperError: a received ciphertext fails authentication (names the sender).
            SecAggAbort: fewer than ``t`` neighbourhood members completed ``share_secrets``.
        """
        setup = self._expect(_SECRETS_SHARED, Stage.COLLECT_MASKED_INPUT)
        self._check_context(setup, shares, shares.recipient, Stage.COLLECT_MASKED_INPUT)
        assert self._share_key is not None and self._mask_key is not None
        assert self._self_seed is not None
        x = np.asarray(vector)
        if x.ndim != 1 or x.shape[0] != setup.vector_length:
            raise SecAggConfigError(
                f"client {self.client_id}: vector must be 1-D of length "
                f"{setup.vector_length}, got shape {x.shape}"
            )
        senders = [s.sender for s in shares.shares]
        if len(set(senders)) != len(senders) or self.client_id in senders:
            raise SecAggProtocolError(
                f"client {self.client_id}: forwarded shares repeat a sender or include itself"
            )
        for s in shares.shares:
            if s.sender not in self._share_pks:
                raise SecAggProtocolError(
                    f"client {self.client_id}: shares from client {s.sender}, which is not "
                    f"a neighbour that published keys"
                )
        received: dict[int, tuple[int, int]] = {}
        for s in shares.shares:
            received[s.sender] = decrypt_shares(
                s,
                key=self._inbound_keys[s.sender],
                run_id=setup.run_id,
                round_id=setup.round_id,
                recipient=self.client_id,
            )
        self._require(Stage.SHARE_SECRETS, len(received) + 1, setup.threshold)
        self._held.update(received)
        self._inbound_keys = {}

        common = dict(run_id=setup.run_id, round_id=setup.round_id)
        masked = quantize(
            x,
            clip_range=setup.clip_range,
            quant_bits=setup.quant_bits,
            modulus_bits=setup.modulus_bits,
            rounding=setup.rounding,
            rng=self._rng,
        )
        b = setup.modulus_bits
        n = setup.vector_length
        mask_key = private_key_from_bytes(self._mask_key)
        masked += expand_mask(
            self_mask_key(self._self_seed, client_id=self.client_id, **common), n, b
        )
        for v in sorted(received):
            mask = expand_mask(
                pairwise_mask_key(
                    mask_key,
                    self._mask_pks[v],
                    client_id=self.client_id,
                    peer_id=v,
                    **common,
                ),
                n,
                b,
            )
            if pairwise_mask_sign(self.client_id, v) > 0:
                masked += mask
            else:
                masked -= mask
        reduce_in_place(masked, b)
        self._state = _INPUT_MASKED
        return MaskedInput(setup.run_id, setup.round_id, self.client_id, masked)

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage ``unmask``: reveal seed shares of survivors, key shares of dropped clients.

        Raises:
            SecAggProtocolError: a client is listed both as survivor and as dropped (or was
                revealed with the other kind before), this client is listed as dropped, or a
                listed client never shared secrets with this one.
            SecAggAbort: fewer than ``t`` neighbourhood members sent masked inputs.
        """
        setup = self._expect(_INPUT_MASKED, Stage.UNMASK)
        self._check_context(setup, request, request.recipient, Stage.UNMASK)
        survivors, dropped = list(request.survivors), list(request.dropped)
        if len(set(survivors)) != len(survivors) or len(set(dropped)) != len(dropped):
            raise SecAggProtocolError(f"client {self.client_id}: repeated ids in unmask request")
        both = (
            (set(survivors) & set(dropped))
            | (set(survivors) & self._revealed_key)
            | (set(dropped) & self._revealed_seed)
        )
        if both:
            raise SecAggProtocolError(
                f"client {self.client_id}: refusing to reveal both the self-mask seed share "
                f"and the mask-key share of client(s) {sorted(both)}"
            )
        if self.client_id not in survivors:
            raise SecAggProtocolError(
                f"client {self.client_id}: unmask request does not list this client as a survivor"
            )
        unknown = (set(survivors) | set(dropped)) - set(self._held)
        if unknown:
            raise SecAggProtocolError(
                f"client {self.client_id}: holds no shares of client(s) {sorted(unknown)}"
            )
        self._require(Stage.COLLECT_MASKED_INPUT, len(survivors), setup.threshold)

        seed_owners, key_owners = sorted(survivors), sorted(dropped)
        response = UnmaskResponse(
            run_id=setup.run_id,
            round_id=setup.round_id,
            client_id=self.client_id,
            seed_share_owners=seed_owners,
            seed_shares=[encode_share(self._held[v][0]) for v in seed_owners],
            key_share_owners=key_owners,
            key_shares=[encode_share(self._held[v][1]) for v in key_owners],
        )
        self._revealed_seed.update(seed_owners)
        self._revealed_key.update(key_owners)
        self._state = _DONE
        self._wipe()
        return response

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """The client's full state as plain types (for Flower's ``context.state``).

        Contains private keys and shares: keep it on the client node.
        """
        setup = self._setup.to_dict() if self._setup is not None else {}
        held = sorted(self._held)
        return {
            "client_id": self.client_id,
            "state": self._state,
            **{f"setup.{k}": v for k, v in setup.items()},
            "neighbours": list(self._neighbours),
            "share_private_key": self._share_key or b"",
            "mask_private_key": self._mask_key or b"",
            "own_public_keys": list(self._own_public_keys),
            "self_seed": self._self_seed or b"",
            "key_owners": sorted(self._share_pks),
            "share_public_keys": [self._share_pks[v] for v in sorted(self._share_pks)],
            "mask_public_keys": [self._mask_pks[v] for v in sorted(self._share_pks)],
            "held_owners": held,
            "held_seed_shares": [encode_share(self._held[v][0]) for v in held],
            "held_key_shares": [encode_share(self._held[v][1]) for v in held],
            "inbound_key_owners": sorted(self._inbound_keys),
            "inbound_keys": [self._inbound_keys[v] for v in sorted(self._inbound_keys)],
            "revealed_seed": sorted(self._revealed_seed),
            "revealed_key": sorted(self._revealed_key),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, rng: Rng = os.urandom) -> SecAggClient:
        """Rebuild a client from :meth:`state_dict` output."""
        if state.get("state") not in _STATES:
            raise SecAggProtocolError(f"unknown client state {state.get('state')!r}")
        client = cls(int(state["client_id"]), rng=rng)
        client._state = state["state"]
        setup = {k[6:]: v for k, v in state.items() if k.startswith("setup.")}
        if setup:
            client._setup = SetupMessage.from_dict(setup)
        client._neighbours = tuple(int(v) for v in state["neighbours"])
        client._share_key = bytes(state["share_private_key"]) or None
        client._mask_key = bytes(state["mask_private_key"]) or None
        share_pk, mask_pk = state["own_public_keys"]
        client._own_public_keys = (bytes(share_pk), bytes(mask_pk))
        client._self_seed = bytes(state["self_seed"]) or None
        owners = [int(v) for v in state["key_owners"]]
        client._share_pks = dict(zip(owners, map(bytes, state["share_public_keys"]), strict=True))
        client._mask_pks = dict(zip(owners, map(bytes, state["mask_public_keys"]), strict=True))
        client._held = {
            int(v): (decode_share(bytes(s)), decode_share(bytes(k)))
            for v, s, k in zip(
                state["held_owners"],
                state["held_seed_shares"],
                state["held_key_shares"],
                strict=True,
            )
        }
        client._inbound_keys = {
            int(v): bytes(k)
            for v, k in zip(state["inbound_key_owners"], state["inbound_keys"], strict=True)
        }
        client._revealed_seed = {int(v) for v in state["revealed_seed"]}
        client._revealed_key = {int(v) for v in state["revealed_key"]}
        return client
