"""The server side of SecAgg+: route messages, track survivors, unmask the sum.

The server is honest but curious (see the threat model in the design notes): it follows
the protocol and sees every message, yet learns only the sum of the inputs of the clients
that sent masked inputs. Survivor sets, in the notation of Bonawitz et al. (CCS 2017):

* ``U1``: clients that published keys (stage ``share_keys``);
* ``U2``: clients of ``U1`` that sent encrypted shares (``share_secrets``);
* ``U3``: clients of ``U2`` that sent masked inputs (``collect_masked_input``) -- exactly
  the contributors to the sum;
* ``U4``: clients of ``U3`` that answered the unmask request (``unmask``).

Unmasking. With ``N(u)`` the neighbours of ``u`` and ``sigma(u, v) = +1`` if ``v > u``
else ``-1``, the server computes

    sum_{u in U3} x_u = sum_{u in U3} y_u - sum_{u in U3} PRG(b_u)
                        - sum_{v in U2 \\ U3} sum_{u in N(v) & U3} sigma(u, v) PRG(s_{u,v})

(mod ``2^b``). ``b_u`` is reconstructed from ``t`` seed shares held by ``u``'s neighbours in
``U4``; for a client ``v`` that dropped after sharing secrets (``U2 \\ U3``) the server
reconstructs ``s_v^SK`` from ``t`` key shares, checks it against ``s_v^PK``, and recomputes
each ``s_{u,v}`` with its surviving neighbours. Clients that dropped before sharing
secrets (``U1 \\ U2``) were never masked with, and clients that dropped after sending their
masked input (``U3 \\ U4``) are still in the sum. Each mask is expanded exactly once.

At every stage the server checks that at least ``t`` clients survive overall and in the
neighbourhood of every live client, and raises :class:`SecAggAbort` naming the stage, the
count and the threshold otherwise.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from privacy.secagg.client import validate_setup
from privacy.secagg.config import SecAggConfig, resolve_round_parameters
from privacy.secagg.errors import SecAggAbort, SecAggProtocolError
from privacy.secagg.graph import build_neighbour_graph
from privacy.secagg.keys import (
    KEY_BYTES,
    Rng,
    private_key_from_bytes,
    public_key_bytes,
    random_bytes,
)
from privacy.secagg.masking import (
    expand_mask,
    modulus_mask,
    pairwise_mask_key,
    pairwise_mask_sign,
    reduce_in_place,
    ring_dtype,
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
from privacy.secagg.quantize import dequantize
from privacy.secagg.shamir import decode_share, reconstruct_secret, share_x

__all__ = ["SecAggServer", "SecAggResult"]

_M = TypeVar("_M")


@dataclass(frozen=True)
class SecAggResult:
    """Outcome of a round.

    Attributes:
        aggregate: float64 sum of the (clipped, quantised) inputs of ``contributors``.
        contributors: sorted ids of the clients whose inputs are in the sum (``U3``).
        survivors: for each stage name, the sorted ids of the clients that completed it.
    """

    aggregate: np.ndarray
    contributors: list[int]
    survivors: dict[str, list[int]] = field(default_factory=dict)

    @property
    def num_contributors(self) -> int:
        """``len(contributors)``, e.g. to turn the sum into a mean."""
        return len(self.contributors)


class SecAggServer:
    """The coordinator of one SecAgg+ round.

    Args:
        client_ids: the cohort (distinct integers in ``[0, 2^64 - 1]``).
        vector_length: length ``L`` of every client's float vector.
        config: operator settings; ``SecAggConfig()`` by default.
        run_id: identifier of the run/session (bound into every key).
        round_id: round number (bound into every key).
        rng: randomness for the public graph seed; default :func:`os.urandom`.
    """

    def __init__(
        self,
        client_ids: Sequence[int],
        vector_length: int,
        config: SecAggConfig | None = None,
        *,
        run_id: str,
        round_id: int,
        rng: Rng = os.urandom,
    ) -> None:
        config = config or SecAggConfig()
        ids = sorted(int(c) for c in client_ids)
        config.validate(len(ids))
        degree, threshold = resolve_round_parameters(config, len(ids))
        self._setup = SetupMessage(
            run_id=run_id,
            round_id=int(round_id),
            client_ids=ids,
            threshold=threshold,
            degree=degree,
            graph_seed=random_bytes(rng, KEY_BYTES),
            vector_length=int(vector_length),
            clip_range=float(config.clip_range),
            quant_bits=config.quant_bits,
            modulus_bits=config.modulus_bits,
            rounding=config.rounding,
        )
        validate_setup(self._setup)
        graph = build_neighbour_graph(
            ids, degree, self._setup.graph_seed, run_id=run_id, round_id=round_id
        )
        self._neighbours = graph
        self._members = {u: frozenset(vs) | {u} for u, vs in graph.items()}
        self._stage = Stage.SETUP
        self._survivors: dict[str, list[int]] = {}
        self._share_pks: dict[int, bytes] = {}
        self._mask_pks: dict[int, bytes] = {}
        self._u2: set[int] = set()
        self._u3: set[int] = set()
        self._requests: dict[int, UnmaskRequest] = {}
        self._total: np.ndarray | None = None

    # ------------------------------------------------------------------ properties
    @property
    def threshold(self) -> int:
        """Shamir threshold ``t``."""
        return self._setup.threshold

    @property
    def degree(self) -> int:
        """Neighbours per client ``k`` (``n - 1`` for the complete graph)."""
        return self._setup.degree

    @property
    def neighbours(self) -> dict[int, tuple[int, ...]]:
        """The round's neighbour graph (each client's neighbours, itself excluded)."""
        return dict(self._neighbours)

    @property
    def survivors(self) -> dict[str, list[int]]:
        """Sorted ids of the clients that completed each stage so far."""
        return {k: list(v) for k, v in self._survivors.items()}

    # ------------------------------------------------------------------ helpers
    def _advance(self, expected: str, new: str) -> None:
        if self._stage != expected:
            raise SecAggProtocolError(
                f"server: stage '{new}' is out of order (current stage '{self._stage}')"
            )
        self._stage = new

    def _collect(
        self, messages: Iterable[_M], sender_of: str, allowed: set[int], stage: str
    ) -> dict[int, _M]:
        out: dict[int, _M] = {}
        for msg in messages:
            sender = getattr(msg, sender_of)
            if msg.run_id != self._setup.run_id or msg.round_id != self._setup.round_id:  # type: ignore[attr-defined]
                raise SecAggProtocolError(
                    f"server: '{stage}' message from client {sender} belongs to another "
                    f"run or round"
                )
            if sender not in allowed:
                raise SecAggProtocolError(
                    f"server: unexpected '{stage}' message from client {sender}"
                )
            if sender in out:
                raise SecAggProtocolError(
                    f"server: duplicate '{stage}' message from client {sender}"
                )
            out[sender] = msg
        return out

    def _check_survivors(self, stage: str, alive: set[int]) -> None:
        self._survivors[stage] = sorted(alive)
        t = self.threshold
        if len(alive) < t:
            raise SecAggAbort(stage, len(alive), t)
        for u in sorted(alive):
            count = len(self._members[u] & alive)
            if count < t:
                raise SecAggAbort(stage, count, t, client_id=u)

    # ------------------------------------------------------------------ stages
    def setup(self) -> SetupMessage:
        """Stage ``setup``: the public round parameters, broadcast to every client."""
        return self._setup

    def collect_public_keys(self, messages: Iterable[PublicKeys]) -> dict[int, NeighbourKeys]:
        """End of stage ``share_keys``: for every client that published keys, the keys of
        its neighbourhood members that did so too."""
        self._advance(Stage.SETUP, Stage.SHARE_KEYS)
        received = self._collect(
            messages, "client_id", set(self._setup.client_ids), Stage.SHARE_KEYS
        )
        for u, msg in received.items():
            if len(msg.share_public_key) != KEY_BYTES or len(msg.mask_public_key) != KEY_BYTES:
                raise SecAggProtocolError(f"server: client {u} sent malformed public keys")
        u1 = set(received)
        self._check_survivors(Stage.SHARE_KEYS, u1)
        self._share_pks = {u: m.share_public_key for u, m in received.items()}
        self._mask_pks = {u: m.mask_public_key for u, m in received.items()}
        out = {}
        for u in sorted(u1):
            ids = sorted(self._members[u] & u1)
            out[u] = NeighbourKeys(
                run_id=self._setup.run_id,
                round_id=self._setup.round_id,
                recipient=u,
                client_ids=ids,
                share_public_keys=[self._share_pks[v] for v in ids],
                mask_public_keys=[self._mask_pks[v] for v in ids],
            )
        return out

    def collect_encrypted_shares(
        self, messages: Iterable[EncryptedShares]
    ) -> dict[int, ForwardedShares]:
        """End of stage ``share_secrets``: route each ciphertext to its recipient (only
        ciphertexts between clients that both completed this stage)."""
        self._advance(Stage.SHARE_KEYS, Stage.SHARE_SECRETS)
        u1 = set(self._share_pks)
        received = self._collect(messages, "sender", u1, Stage.SHARE_SECRETS)
        for u, msg in received.items():
            recipients = [s.recipient for s in msg.shares]
            expected = (self._members[u] & u1) - {u}
            if any(s.sender != u for s in msg.shares) or sorted(recipients) != sorted(expected):
                raise SecAggProtocolError(
                    f"server: client {u} must send exactly one ciphertext to each neighbour "
                    f"that published keys"
                )
        u2 = set(received)
        self._check_survivors(Stage.SHARE_SECRETS, u2)
        self._u2 = u2
        inbox: dict[int, list] = {u: [] for u in u2}
        for u in sorted(u2):
            for s in received[u].shares:
                if s.recipient in u2:
                    inbox[s.recipient].append(s)
        return {
            u: ForwardedShares(self._setup.run_id, self._setup.round_id, u, inbox[u])
            for u in sorted(u2)
        }

    def collect_masked_inputs(self, messages: Iterable[MaskedInput]) -> dict[int, UnmaskRequest]:
        """End of stage ``collect_masked_input``: add up the masked inputs and ask every
        contributor for the shares needed to unmask."""
        self._advance(Stage.SHARE_SECRETS, Stage.COLLECT_MASKED_INPUT)
        received = self._collect(messages, "client_id", self._u2, Stage.COLLECT_MASKED_INPUT)
        n = self._setup.vector_length
        b = self._setup.modulus_bits
        word = ring_dtype(b)
        total = np.zeros(n, dtype=word)
        for u in sorted(received):
            y = received[u].masked_vector
            if not isinstance(y, np.ndarray) or y.dtype != word or y.shape != (n,):
                raise SecAggProtocolError(
                    f"server: masked input of client {u} must be a {word} array of shape ({n},)"
                )
            if b < 8 * word.itemsize and np.any(y > modulus_mask(b)):
                raise SecAggProtocolError(
                    f"server: masked input of client {u} has elements >= 2^{b}"
                )
            total += y
        u3 = set(received)
        self._check_survivors(Stage.COLLECT_MASKED_INPUT, u3)
        self._u3 = u3
        self._total = total
        self._requests = {
            u: UnmaskRequest(
                run_id=self._setup.run_id,
                round_id=self._setup.round_id,
                recipient=u,
                survivors=sorted(self._members[u] & u3),
                dropped=sorted((self._members[u] & self._u2) - u3),
            )
            for u in sorted(u3)
        }
        return dict(self._requests)

    def collect_unmask_responses(self, messages: Iterable[UnmaskResponse]) -> SecAggResult:
        """End of stage ``unmask``: reconstruct seeds and dropped keys, remove every mask and
        return the float sum of the contributors' inputs."""
        self._advance(Stage.COLLECT_MASKED_INPUT, Stage.UNMASK)
        received = self._collect(messages, "client_id", self._u3, Stage.UNMASK)
        self._survivors[Stage.UNMASK] = sorted(received)
        t = self.threshold
        if len(received) < t:
            raise SecAggAbort(Stage.UNMASK, len(received), t)

        seed_points: dict[int, list[tuple[int, int]]] = {u: [] for u in self._u3}
        key_points: dict[int, list[tuple[int, int]]] = {u: [] for u in self._u2 - self._u3}
        for u, msg in sorted(received.items()):
            request = self._requests[u]
            seeds, keys = msg.seed_share_owners, msg.key_share_owners
            if set(seeds) & set(keys):
                raise SecAggProtocolError(
                    f"server: client {u} revealed both shares of client(s) "
                    f"{sorted(set(seeds) & set(keys))}"
                )
            if (
                len(set(seeds)) != len(seeds)
                or len(set(keys)) != len(keys)
                or not set(seeds) <= set(request.survivors)
                or not set(keys) <= set(request.dropped)
            ):
                raise SecAggProtocolError(
                    f"server: unmask response of client {u} does not match its request"
                )
            x = share_x(u)
            for owner, raw in zip(seeds, msg.seed_shares, strict=True):
                seed_points[owner].append((x, decode_share(raw)))
            for owner, raw in zip(keys, msg.key_shares, strict=True):
                key_points[owner].append((x, decode_share(raw)))

        setup = self._setup
        common = dict(run_id=setup.run_id, round_id=setup.round_id)
        n, b = setup.vector_length, setup.modulus_bits
        assert self._total is not None
        total = self._total
        for u in sorted(self._u3):
            if len(seed_points[u]) < t:
                raise SecAggAbort(Stage.UNMASK, len(seed_points[u]), t, client_id=u)
            seed = reconstruct_secret(seed_points[u], t)
            total -= expand_mask(self_mask_key(seed, client_id=u, **common), n, b)
        for v in sorted(self._u2 - self._u3):
            partners = sorted(set(self._neighbours[v]) & self._u3)
            if not partners:
                continue
            if len(key_points[v]) < t:
                raise SecAggAbort(Stage.UNMASK, len(key_points[v]), t, client_id=v)
            secret_key = private_key_from_bytes(reconstruct_secret(key_points[v], t))
            if not hmac.compare_digest(public_key_bytes(secret_key), self._mask_pks[v]):
                raise SecAggProtocolError(
                    f"server: reconstructed mask key of dropped client {v} does not match "
                    f"its public key (inconsistent shares)"
                )
            for u in partners:
                mask = expand_mask(
                    pairwise_mask_key(
                        secret_key, self._mask_pks[u], client_id=v, peer_id=u, **common
                    ),
                    n,
                    b,
                )
                # u added sigma(u, v) * mask; take it out.
                if pairwise_mask_sign(u, v) > 0:
                    total -= mask
                else:
                    total += mask
        reduce_in_place(total, b)
        aggregate = dequantize(
            total, clip_range=setup.clip_range, quant_bits=setup.quant_bits, modulus_bits=b
        )
        self._total = None
        return SecAggResult(
            aggregate=aggregate,
            contributors=sorted(self._u3),
            survivors=self.survivors,
        )
