"""Secure aggregation (SecAgg+) on Flower's Message API: the server learns only the sum.

:class:`SecureWorkflow` has the interface of :class:`server.workflow.PlainWorkflow`, but a
round has four stages driving the protocol core in :mod:`privacy.secagg` (Bonawitz et
al., CCS 2017; Bell et al., CCS 2020; the messages are in :mod:`task.secagg_wire`)::

    secagg_setup          public round parameters          ->  public keys
    secagg_share_secrets  neighbours' public keys          ->  encrypted Shamir shares
    secagg_masked_input   model, config, the client's      ->  status, epsilon, masked
                          shares                               input y_u, next round's
                                                               public keys
    secagg_unmask         who survived, who dropped        ->  seed / key shares

Each client trains on receiving ``secagg_masked_input`` and masks its input in the same
handler, as Flower's SecAgg+ workflow does, so no unmasked input waits between stages. The
input is one vector holding the weighted update, the weight and every data-dependent metric
(:mod:`task.secure_vector`); only the client's id, status, epsilon and mechanism parameters
travel in the clear. The server therefore receives, per client, only uniformly distributed
masked vectors, public keys and ciphertexts it cannot open. A client that declines (its
budget would be exceeded) sends a neutral input, so it stays in the sum and adds nothing
to it but its share of client-level noise.

Key exchange ahead. The first two stages need neither the model nor any data, so they run
for the next round's cohort before this round ends; :meth:`SecureWorkflow.run_round` then
starts at the masked-input stage. Nothing is trained or charged before the model goes out,
so running them early changes no privacy accounting, and a round whose key exchange
failed ahead is aborted exactly as if it had failed in place.

- Keys published ahead. A client's masked-input reply carries the public keys of fresh
  key pairs for its next round. Clients of the next cohort that published keys in the
  round before skip ``secagg_setup``: the server uses the published keys as their stage-1
  reply, and their share-secrets message carries the round's setup. Keys are taken from
  the last round only, and each pair serves one round: the client drops it when it
  starts a round with it (or with a setup), the server when it hands it to a round.
- Shares with the unmask stage. Given ``next_cohort``, :meth:`SecureWorkflow.run_round`
  learns the next cohort as soon as the clients' training reports (and with them their
  budgets) are in, after the masked-input stage; nodes of that cohort without published
  keys get ``secagg_setup`` then, and the next round's ``secagg_share_secrets`` travels in
  the same Message round as this round's ``secagg_unmask``, inside it for a node in both
  rounds (which unmasks first, so this round's secrets are wiped before the next round's
  begin). A steady cohort's round is then two Message rounds, one more than a plain
  round.
- After a round that ended before its training reports (its key exchange failed),
  :meth:`SecureWorkflow.prepare_round` runs the next key exchange on a background thread
  while the server updates and evaluates the model; the first round exchanges
  keys in place.

Dropouts. A node that does not answer a stage, answers with an error, or reports a
failure (a protocol error, a local round that could not run) has dropped out at that
stage: the protocol excludes it (before sending its masked input) or unmasks the sum
without it (its pairwise masks are rebuilt from its neighbours' key shares). Clients that
drop after sending their masked input stay in the sum. When fewer than ``t`` clients
survive a stage (overall or in some neighbourhood), the round is aborted:
:meth:`SecureWorkflow.run_round` returns an aggregate with ``aborted`` set, the federation
keeps the global model, and the next round starts afresh.

Threshold: ``t = max(floor(m / 2) + 1, ceil(f * m))`` for a neighbourhood of ``m`` clients
(``m = n`` up to 20 clients, ``k + 1`` with ``k ~ log2 n`` neighbours beyond) and
``f = secagg-threshold-fraction``; ``t > m / 2`` keeps any ``t - 1`` colluding
neighbours from learning anything and stops a server from obtaining both secrets of one
client.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from privacy.secagg import (
    EncryptedShares,
    MaskedInput,
    PublicKeys,
    SecAggConfig,
    SecAggError,
    SecAggProtocolError,
    SecAggResult,
    SecAggServer,
    UnmaskRequest,
    UnmaskResponse,
    default_threshold,
    resolve_round_parameters,
)
from privacy.secagg.keys import KEY_BYTES
from server.messaging import send_and_receive
from server.workflow import (
    ClientReport,
    NextCohort,
    RoundAggregate,
    node_config,
    parse_report,
    unnamed_client,
)
from task import secagg_wire as wire
from task.config import RunConfig
from task.background import in_background
from task.records import from_record
from task.secure_vector import MIN_RING32_QUANT_BITS, VectorLayout

log = logging.getLogger(__name__)

__all__ = ["SecureWorkflow", "SecureRound", "protocol_config"]

_M = TypeVar("_M")


def protocol_config(config: RunConfig, cohort_size: int, layout: VectorLayout) -> SecAggConfig:
    """The protocol settings for a cohort of ``cohort_size`` sending vectors of ``layout``:
    default neighbour graph, threshold from ``secagg-threshold-fraction``, quantisation
    range ``secagg-clip-range``, and the ring the layout needs (:meth:`VectorLayout.ring`)."""
    defaults = SecAggConfig()
    degree, _ = resolve_round_parameters(defaults, cohort_size)
    members = degree + 1
    threshold = max(
        default_threshold(members), math.ceil(config.secagg_threshold_fraction * members)
    )
    quant_bits, modulus_bits = layout.ring(cohort_size, defaults.rounding)
    return SecAggConfig(threshold=threshold, degree=degree, clip_range=config.secagg_clip_range,
                        quant_bits=quant_bits, modulus_bits=modulus_bits)


@dataclass
class SecureRound:
    """What ``summary.json`` records about one round of secure aggregation.

    ``dropouts`` maps each protocol stage to the clients of the cohort that did not
    complete it (declined, failed, no reply, protocol error), in order of stages.
    """

    server_round: int
    cohort: int
    threshold: int
    degree: int
    # Quantisation bits q and ring Z_2^b, and the per-coordinate error bound of one client's
    # contribution to the weighted update sum, u R / (2^q - 2).
    quant_bits: int = 0
    modulus_bits: int = 0
    error_bound_per_client: float = 0.0
    dropouts: dict[str, list[str]] = field(default_factory=dict)
    contributors: int = 0
    aborted: str | None = None
    clipped_coordinates: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    # The key-exchange stages ran ahead: with the previous round's unmask stage, or during
    # its server work.
    key_exchange_ahead: bool = False
    # Its share secrets travelled with the previous round's unmask stage (their time is
    # in that round's "unmask" seconds).
    shares_with_unmask: bool = False
    # Clients that started the round with the keys they published in the round before.
    keys_published_ahead: int = 0


class _Round:
    """The server's bookkeeping for one round: who is who, who left when and why."""

    def __init__(self, cohort: Sequence[int], record: SecureRound) -> None:
        self.cohort = sorted(cohort)
        self.index = {node: i for i, node in enumerate(self.cohort)}
        self.names: dict[int, str] = {}
        self.reports: dict[int, ClientReport] = {}
        self.left: dict[int, tuple[str, str]] = {}
        # The public keys each node published with its masked input, for its next round.
        self.published: dict[int, tuple[bytes, bytes]] = {}
        self.record = record

    def name(self, node: int) -> str:
        return self.names.get(node, unnamed_client(node))

    def drop(self, node: int, stage: str, why: str) -> None:
        self.left.setdefault(node, (stage, why))
        self.record.dropouts.setdefault(stage, []).append(self.name(node))
        log.warning("round %d: %s left secure aggregation at stage '%s': %s",
                    self.record.server_round, self.name(node), stage, why)

    def final_reports(self, contributors: set[int], aborted: str | None) -> list[ClientReport]:
        """Statuses once the round is over: "trained" means "in the sum"."""
        for node in self.cohort:
            if node in self.reports:
                continue
            # It never reached training: it left, or the round ended before it trained.
            if node in self.left:
                stage, why = self.left[node]
                status, reason = "dropped", f"left secure aggregation at stage '{stage}': {why}"
            elif aborted is not None:
                status, reason = "aborted", str(aborted)
            else:
                status, reason = "dropped", "left out by the protocol before it trained"
            self.reports[node] = ClientReport(node, self.name(node), status, reason=reason)
        for node, report in self.reports.items():
            if report.status != "trained":
                continue
            in_sum = aborted is None and self.index[node] in contributors
            if node in self.left and not in_sum:
                stage, why = self.left[node]
                report.status = "dropped"
                report.reason = f"left secure aggregation at stage '{stage}': {why}"
            elif not in_sum:
                report.status, report.reason = "aborted", str(aborted)
        return [self.reports[n] for n in self.cohort]


@dataclass
class _OpenRound:
    """A round in its key exchange: the protocol server, its bookkeeping, the neighbours'
    keys to send at the share-secrets stage, then the shares to forward at the
    masked-input stage, or why the key exchange failed."""

    layout: VectorLayout
    server: SecAggServer
    state: _Round
    # The public keys nodes published for this round in the round before.
    published: Mapping[int, tuple[bytes, bytes]] = field(default_factory=dict)
    neighbour_keys: dict[int, Any] = field(default_factory=dict)
    forwarded: dict[int, Any] = field(default_factory=dict)
    error: SecAggError | None = None


class SecureWorkflow:
    """Runs each round as SecAgg+ over the Message API; returns only the sum."""

    secure = True

    def __init__(self, config: RunConfig) -> None:
        self._config = config
        # Bound into every key and ciphertext, so nothing replays across runs.
        self._run_nonce = secrets.token_hex(8)
        self.rounds: list[SecureRound] = []
        # (round, its sorted cohort, its key exchange) started by prepare_round
        self._ahead: tuple[int, list[int], Future[_OpenRound]] | None = None
        # The public keys published in the last round's unmask replies, by node.
        self._published: dict[int, tuple[bytes, bytes]] = {}

    def describe(self) -> dict:
        """``secure_aggregation``, its parameters and what happened in every round."""
        c = self._config
        defaults = SecAggConfig()
        return {
            "secure_aggregation": True,
            "secure_aggregation_parameters": {
                "protocol": "SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020) on Flower's "
                "Message API",
                "key_agreement": "X25519 + HKDF-SHA256, fresh keys per round",
                "masks": "AES-256-CTR keystream over Z_2^b, 256-bit keys",
                "secret_sharing": "Shamir over GF(2^521 - 1), shares under AES-256-GCM",
                "threshold_fraction": c.secagg_threshold_fraction,
                "full_graph_max_clients": defaults.full_graph_max_clients,
                "clip_range": c.secagg_clip_range,
                "weight_scale": c.secagg_weight_scale,
                "ring": f"Z_2^32 with q = 32 - ceil(log2 n) bits while q >= "
                f"{MIN_RING32_QUANT_BITS} and integer totals stay exact, else Z_2^64 with "
                f"q = 32 (each round's q and b are in secure_aggregation_rounds)",
                "rounding": defaults.rounding,
                "update_weights": "uniform" if c.client_dp else "num-examples",
                "client_dp": (
                    {"noise_multiplier": c.client_noise_multiplier,
                     "clip_norm": c.client_clip_norm}
                    if c.client_dp else None
                ),
            },
            "secure_aggregation_rounds": [asdict(r) for r in self.rounds],
        }

    def prepare_round(
        self,
        grid: Grid,
        node_ids: Sequence[int],
        arrays: ArrayRecord,
        server_round: int,
        timeout: float | None = None,
    ) -> None:
        """Start round ``server_round``'s key exchange (setup, share secrets) over
        ``node_ids`` on a background thread; :meth:`run_round` with the same round and
        nodes continues from it (at once if the round before opened it already, with its
        unmask stage). ``arrays``: any model of the run's shapes."""
        if self._ahead is not None:
            if self._ahead[:2] == (server_round, sorted(node_ids)):
                return
            self._ahead[2].result()  # one exchange at a time on the Grid
        published = self._take_published()
        self._ahead = (server_round, sorted(node_ids), in_background(
            lambda: self._open(grid, node_ids, arrays, server_round, timeout, published),
            f"secagg-key-exchange-{server_round}",
        ))

    def run_round(
        self,
        grid: Grid,
        node_ids: Sequence[int],
        arrays: ArrayRecord,
        config: dict,
        server_round: int,
        timeout: float | None = None,
        per_node: Mapping[int, dict] | None = None,
        next_cohort: NextCohort | None = None,
    ) -> RoundAggregate:
        """One round of SecAgg+ over ``node_ids``; the sum of the contributors' inputs
        (``per_node[node]`` is added to that node's training config).

        ``next_cohort``: called once the clients' training reports are in (before the
        unmask stage) with those reports; it returns the next round's cohort (empty: no
        next round), whose key exchange then travels with this round's unmask stage."""
        opened = self._take_ahead(server_round, node_ids)
        if opened is None:
            opened = self._open(grid, node_ids, arrays, server_round, timeout,
                                self._take_published())
        state, record = opened.state, opened.state.record
        self.rounds.append(record)
        try:
            if opened.error is not None:
                raise opened.error
            result = self._finish(grid, opened, arrays, config, timeout, per_node, next_cohort)
        except SecAggError as error:
            record.aborted = str(error)
            return RoundAggregate({}, 0.0, {}, state.final_reports(set(), record.aborted),
                                  aborted=record.aborted)
        finally:  # whatever the round's fate, the keys its unmask replies published
            self._published = state.published
        totals = opened.layout.unpack(result.aggregate)
        record.contributors = result.num_contributors
        record.clipped_coordinates = totals.clipped_coordinates
        if totals.clipped_coordinates:
            log.warning(
                "round %d: %d input coordinate(s) fell outside [-R, R] and were clipped; "
                "raise secagg-clip-range or secagg-weight-scale",
                server_round, totals.clipped_coordinates,
            )
        return RoundAggregate(
            totals.update_sum,
            totals.weight_sum,
            totals.metric_sums,
            state.final_reports(set(result.contributors), None),
        )

    def _take_published(self) -> dict[int, tuple[bytes, bytes]]:
        """The keys published in the last round, handed to one round only."""
        published, self._published = self._published, {}
        return published

    def _take_ahead(self, server_round: int, node_ids: Sequence[int]) -> _OpenRound | None:
        """The round prepared ahead, if it is this one over these nodes."""
        if self._ahead is None:
            return None
        prepared_round, cohort, opening = self._ahead
        self._ahead = None
        opened = opening.result()  # also: no two threads on the Grid at once
        if (prepared_round, cohort) != (server_round, sorted(node_ids)):
            log.info("round %d: the key exchange run ahead for round %d (%d nodes) is not "
                     "used; exchanging keys again", server_round, prepared_round, len(cohort))
            return None
        opened.state.record.key_exchange_ahead = True
        return opened

    # ------------------------------------------------------------------ stages
    def _open(
        self,
        grid: Grid,
        node_ids: Sequence[int],
        arrays: ArrayRecord,
        server_round: int,
        timeout: float | None,
        published: Mapping[int, tuple[bytes, bytes]],
    ) -> _OpenRound:
        """A new round over ``node_ids`` through its key exchange (``published``: public
        keys nodes published for it in the round before)."""
        opened = self._new_round(grid, node_ids, arrays, server_round, published)
        keys, fresh = self._published_keys(opened)
        if fresh:
            keys += self._stage(grid, wire.SETUP, fresh, PublicKeys, "client_id",
                                opened.state, timeout, extra=self._setup_extra(opened))
        return self._finish_key_exchange(grid, opened, keys, timeout)

    def _new_round(
        self,
        grid: Grid,
        node_ids: Sequence[int],
        arrays: ArrayRecord,
        server_round: int,
        published: Mapping[int, tuple[bytes, bytes]],
    ) -> _OpenRound:
        """Round ``server_round`` over ``node_ids`` before any message: its protocol server
        and bookkeeping. ``arrays``: any model of the run's shapes."""
        layout = VectorLayout.for_run(from_record(arrays), self._config)
        params = protocol_config(self._config, len(node_ids), layout)
        server = SecAggServer(
            range(len(node_ids)),
            layout.length,
            params,
            run_id=f"{grid.run.run_id}:{self._run_nonce}",
            round_id=server_round,
        )
        record = SecureRound(
            server_round, len(node_ids), server.threshold, server.degree,
            quant_bits=params.quant_bits, modulus_bits=params.modulus_bits,
            error_bound_per_client=layout.error_bound(1, params.quant_bits, params.rounding),
        )
        return _OpenRound(layout, server, _Round(node_ids, record), published)

    @staticmethod
    def _published_keys(
        opened: _OpenRound, busy: frozenset[int] = frozenset()
    ) -> tuple[list[PublicKeys], dict[int, None]]:
        """Stage 1 for the nodes that published keys for the round (their stage-1 replies),
        and the nodes that need a setup message, by protocol id. A node in ``busy`` (still
        in the round before) that published no usable keys cannot be set up now: it drops
        out of this round."""
        server, state, published = opened.server, opened.state, opened.published
        setup = server.setup()
        keys = [PublicKeys(setup.run_id, setup.round_id, state.index[node], *published[node])
                for node in state.cohort if node in published]
        state.record.keys_published_ahead = len(keys)
        fresh = {}
        for node in state.cohort:
            if node in busy and node not in published:
                state.drop(node, wire.STAGE_OF_ACTION[wire.SETUP],
                           "published no usable keys in the round before, still in it")
            elif node not in published:
                fresh[state.index[node]] = None
        return keys, fresh

    @staticmethod
    def _setup_extra(opened: _OpenRound) -> Callable[[int], dict]:
        """The records of a node's setup message: the round's setup and its protocol id."""
        setup_records = wire.to_records(opened.server.setup())
        return lambda node: {**setup_records,
                             wire.RECIPIENT_KEY: _recipient_record(opened.state, node)}

    @staticmethod
    def _share_secrets_extra(opened: _OpenRound) -> Callable[[int], dict]:
        """The records beside the neighbours' keys at share secrets: the round's setup and
        the node's protocol id for a node that starts the round there."""
        starts_here = wire.to_records(opened.server.setup(), key=wire.SETUP_KEY)
        return lambda node: {
            **starts_here, wire.RECIPIENT_KEY: _recipient_record(opened.state, node)
        } if node in opened.published else {}

    def _share_secrets(self, grid: Grid, opened: _OpenRound, timeout: float | None) -> None:
        """Stage 2 in a Message round of its own: the shares to forward at masked input."""
        shares = self._stage(grid, wire.SHARE_SECRETS, opened.neighbour_keys, EncryptedShares,
                             "sender", opened.state, timeout,
                             extra=self._share_secrets_extra(opened))
        opened.forwarded = opened.server.collect_encrypted_shares(shares)

    def _finish(
        self,
        grid: Grid,
        opened: _OpenRound,
        arrays: ArrayRecord,
        config: dict,
        timeout: float | None,
        per_node: Mapping[int, dict] | None,
        next_cohort: NextCohort | None,
    ) -> SecAggResult:
        """Masked input (the clients train) and unmask, with the next round's key
        exchange when ``next_cohort`` names its nodes: the sum."""
        server, state = opened.server, opened.state
        masked = self._stage(grid, wire.MASKED_INPUT, opened.forwarded, MaskedInput,
                             "client_id", state, timeout, extra=lambda node: {
                                 "arrays": arrays,
                                 "config": node_config(config, node, per_node),
                             })
        requests = server.collect_masked_inputs(masked)
        upcoming = None
        if next_cohort is not None:
            upcoming_nodes = next_cohort([state.reports[n] for n in state.cohort
                                          if n in state.reports])
            if upcoming_nodes:
                # It takes the keys published in this round; each pair serves one round.
                published, state.published = state.published, {}
                upcoming = self._new_round(grid, upcoming_nodes, arrays,
                                           state.record.server_round + 1, published)
                upcoming.state.record.key_exchange_ahead = True
                upcoming.state.names.update(
                    (node, state.names[node]) for node in upcoming_nodes if node in state.names)
        responses = self._unmask(grid, state, requests, upcoming, timeout)
        return server.collect_unmask_responses(responses)

    def _unmask(
        self,
        grid: Grid,
        state: _Round,
        requests: Mapping[int, UnmaskRequest],
        upcoming: _OpenRound | None,
        timeout: float | None,
    ) -> list[UnmaskResponse]:
        """The unmask stage, and with it in one Message round the ``upcoming`` round's
        first key-exchange stage: its share secrets when every node of it published keys
        (inside the unmask message for a node in both rounds, :func:`wire.nest`), else
        setup for the nodes that did not, its share secrets then following on a background
        thread. The upcoming round is kept for :meth:`run_round` to continue from."""
        unmask = self._contents(requests, state)
        outgoing = {node: (wire.UNMASK, state.record.server_round, content)
                    for node, content in unmask.items()}
        setups: dict[int, RecordDict] = {}
        shares: dict[int, RecordDict] = {}
        keys: list[PublicKeys] = []
        if upcoming is not None:
            upcoming_round = upcoming.state.record.server_round
            keys, fresh = self._published_keys(upcoming, busy=frozenset(unmask))
            if fresh:  # newcomers: not in this round
                setups = self._contents(fresh, upcoming.state, self._setup_extra(upcoming))
                outgoing.update((node, (wire.SETUP, upcoming_round, content))
                                for node, content in setups.items())
            else:
                try:
                    upcoming.neighbour_keys = upcoming.server.collect_public_keys(keys)
                except SecAggError as error:
                    upcoming.error = error
                else:
                    shares = self._contents(upcoming.neighbour_keys, upcoming.state,
                                            self._share_secrets_extra(upcoming))
            for node, content in shares.items():
                if node in outgoing:
                    outgoing[node][2].update(wire.nest(content))
                else:
                    outgoing[node] = (wire.SHARE_SECRETS, upcoming_round, content)
        replies = self._exchange(grid, outgoing, state.record,
                                 wire.STAGE_OF_ACTION[wire.UNMASK], timeout)
        responses = self._receive(replies, unmask, wire.UNMASK, UnmaskResponse, "client_id",
                                  state)
        if upcoming is None:
            return responses
        opening: Future[_OpenRound]
        if setups:
            keys += self._receive(replies, setups, wire.SETUP, PublicKeys, "client_id",
                                  upcoming.state)
            opening = in_background(lambda: self._finish_key_exchange(grid, upcoming, keys,
                                                                      timeout),
                                    f"secagg-key-exchange-{upcoming_round}")
        else:
            if upcoming.error is None:
                encrypted = self._receive(replies, shares, wire.SHARE_SECRETS,
                                          EncryptedShares, "sender", upcoming.state,
                                          nested=frozenset(unmask))
                upcoming.state.record.shares_with_unmask = True
                try:
                    upcoming.forwarded = upcoming.server.collect_encrypted_shares(encrypted)
                except SecAggError as error:
                    upcoming.error = error
            opening = Future()
            opening.set_result(upcoming)
        self._ahead = (upcoming.state.record.server_round, upcoming.state.cohort, opening)
        return responses

    def _finish_key_exchange(
        self, grid: Grid, opened: _OpenRound, keys: list[PublicKeys], timeout: float | None
    ) -> _OpenRound:
        """The rest of a key exchange whose stage-1 replies are ``keys``."""
        try:
            opened.neighbour_keys = opened.server.collect_public_keys(keys)
            self._share_secrets(grid, opened, timeout)
        except SecAggError as error:
            opened.error = error
        return opened

    def _stage(
        self,
        grid: Grid,
        action: str,
        outgoing: Mapping[int, Any],
        cls: type[_M],
        sender_field: str,
        state: _Round,
        timeout: float | None,
        extra: Callable[[int], dict] | None = None,
    ) -> list[_M]:
        """Send each client its stage message ``outgoing[i]`` (``None``: none) with the
        records ``extra(node)``, if given; parse the replies, dropping the failures."""
        contents = self._contents(outgoing, state, extra)
        replies = self._exchange(grid, {node: (action, state.record.server_round, content)
                                        for node, content in contents.items()},
                                 state.record, wire.STAGE_OF_ACTION[action], timeout)
        return self._receive(replies, contents, action, cls, sender_field, state)

    @staticmethod
    def _contents(
        outgoing: Mapping[int, Any], state: _Round, extra: Callable[[int], dict] | None = None
    ) -> dict[int, RecordDict]:
        """Each node's message content: its stage message ``outgoing[i]`` (``None``: none)
        and the records ``extra(node)``, if given."""
        contents = {}
        for i, message in outgoing.items():
            node = state.cohort[i]
            records = wire.to_records(message) if message is not None else {}
            contents[node] = RecordDict({**records, **(extra(node) if extra else {})})
        return contents

    def _receive(
        self,
        replies: Mapping[int, Message],
        sent: Mapping[int, Any],
        action: str,
        cls: type[_M],
        sender_field: str,
        state: _Round,
        nested: frozenset[int] = frozenset(),
    ) -> list[_M]:
        """The stage messages in the replies of the nodes ``sent`` to, dropping the nodes
        that failed; a node in ``nested`` answered inside another stage's reply
        (:func:`wire.nest`). The stage that trains (``secagg_masked_input``) also keeps
        each reply's clear report and the keys it published."""
        stage = wire.STAGE_OF_ACTION[action]
        received = []
        for node in sent:
            reply = replies.get(node)
            if reply is None:
                state.drop(node, stage, "no reply before the timeout")
                continue
            error = reply.error.reason if reply.has_error() else None
            content = reply.content if error is not None or node not in nested else (
                wire.next_round_part(reply.content) or RecordDict())
            if error is None and "status" not in content:
                state.drop(node, stage, "malformed reply: no status" if node not in nested
                           else "its reply left this stage unanswered")
                continue
            if error is None:
                state.names[node] = str(content["status"]["client-id"])
            if action == wire.MASKED_INPUT:
                state.reports[node] = report = parse_report(reply, node)
                if report.status == "failed" and "steps" in report.public:
                    # It trained (and was charged), then left the protocol: "dropped" below.
                    report.status = "trained"
            message = self._parse(error, content, cls, sender_field, state, node, action)
            if message is not None:
                received.append(message)
                if action == wire.MASKED_INPUT:
                    self._keep_published_keys(content, state, node)
        return received

    @staticmethod
    def _keep_published_keys(content: RecordDict, state: _Round, node: int) -> None:
        """Keep the next-round public keys in a masked-input reply's ``content``, if well
        formed."""
        record = content.get(wire.NEXT_KEYS_KEY)
        if record is None:
            return
        keys = (record.get("share-public-key"), record.get("mask-public-key"))
        if all(isinstance(k, bytes) and len(k) == KEY_BYTES for k in keys) and keys[0] != keys[1]:
            state.published[node] = keys  # type: ignore[assignment]
        else:
            log.warning("round %d: %s published malformed keys for its next round; it will "
                        "get a setup message", state.record.server_round, state.name(node))

    @staticmethod
    def _parse(
        error: str | None,
        content: RecordDict,
        cls: type[_M],
        sender_field: str,
        state: _Round,
        node: int,
        action: str,
    ) -> _M | None:
        """The protocol message in a reply's ``content``, or ``None`` after recording why
        there is none (``error``: the reply's error, if it is one)."""
        stage = wire.STAGE_OF_ACTION[action]
        if error is not None:
            state.drop(node, stage, error)
            return None
        status = content["status"]
        accepted = ("trained", "declined") if action == wire.MASKED_INPUT else ("ok",)
        if str(status["status"]) not in accepted:
            state.drop(node, stage, str(status.get("reason", status["status"])))
            return None
        try:
            message = wire.from_records(content, cls)
        except SecAggProtocolError as protocol_error:
            state.drop(node, stage, f"malformed reply: {protocol_error}")
            return None
        claimed = getattr(message, sender_field)
        if claimed != state.index[node]:
            state.drop(node, stage, f"reply claims to come from client {claimed}")
            return None
        return message

    @staticmethod
    def _exchange(
        grid: Grid,
        outgoing: Mapping[int, tuple[str, int, RecordDict]],
        record: SecureRound,
        stage: str,
        timeout: float | None,
    ) -> dict[int, Message]:
        """One Message round: to each node its stage ``outgoing[node] = (action, round,
        content)``; the replies by node id. Its time goes to ``record`` under ``stage``."""
        started = time.perf_counter()
        messages = [
            Message(
                content=content,
                message_type=wire.message_type(action),
                dst_node_id=node,
                group_id=str(server_round),
            )
            for node, (action, server_round, content) in outgoing.items()
        ]
        replies = {m.metadata.src_node_id: m for m in send_and_receive(grid, messages, timeout)}
        record.seconds[stage] = time.perf_counter() - started
        return replies


def _recipient_record(state: _Round, node: int) -> ConfigRecord:
    """The node's protocol id in the round of ``state``, for the message that sets it up."""
    return ConfigRecord({"client-id": state.index[node]})
