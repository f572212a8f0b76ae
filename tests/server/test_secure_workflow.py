"""Secure aggregation on the Message API: the server workflow with the real client handlers.

The fast tests run whole rounds in process (``tests.inprocess_grid``: real ClientApp, real
cryptography, synthetic local training). The slow ones run real Flower simulations (Ray):
they capture every message the server receives and show that no update can be read from
them, compare accuracy with plain aggregation, and drop clients midway.
"""

from __future__ import annotations

import json
import re
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation
from opacus.accountants import RDPAccountant
from typer.testing import CliRunner

from client import app as client_main
from client import secure_aggregation
from client.secure_aggregation import NEXT_KEYS_STATE_KEY
from fedshield import cli
from privacy.ledger import PrivacyLedger
from privacy.secagg import MaskedInput, SecAggProtocolError
from server.federation import run_federation
from server.secure_workflow import SecureWorkflow, protocol_config
from simulations.run import backend_config, simulate
from task import secagg_wire as wire
from task.config import ConfigError
from task.records import to_record
from task.secure_vector import CLEAR_METRICS, VectorLayout
from tests.inprocess_grid import InProcessGrid, default_config, flat_update

SMALL_MODEL = {
    "conv.weight": np.zeros((6, 1, 5, 5), np.float32),
    "conv.bias": np.zeros(6, np.float32),
    "fc.weight": np.zeros((10, 120), np.float32),
}


def secure_round(grid: InProcessGrid, config, server_round: int = 1, nodes=None,
                 model=SMALL_MODEL):
    workflow = SecureWorkflow(config)
    aggregate = workflow.run_round(
        grid, nodes or grid.nodes, to_record(model),
        {**config.to_flower(), "server-round": server_round}, server_round,
    )
    return workflow, aggregate


def float_sum(grid: InProcessGrid, server_round: int, nodes) -> tuple[np.ndarray, float]:
    outcomes = [grid.outcomes[(server_round, n)] for n in nodes]
    weights = [float(o.metrics["num-examples"]) for o in outcomes]
    return sum(w * flat_update(o) for w, o in zip(weights, outcomes)), sum(weights)


def secure_update(aggregate) -> np.ndarray:
    return np.concatenate([v.astype(np.float64).ravel() for v in aggregate.update_sum.values()])


# ---------------------------------------------------------------- fast, in process


def test_sum_matches_the_float_sum_within_the_quantisation_bound():
    config = default_config()
    grid = InProcessGrid(5)
    workflow, aggregate = secure_round(grid, config)

    expected, weight = float_sum(grid, 1, grid.nodes)
    got = secure_update(aggregate)
    layout = VectorLayout.for_run(SMALL_MODEL, config)
    (record,) = workflow.describe()["secure_aggregation_rounds"]
    assert (record["quant_bits"], record["modulus_bits"]) == (29, 32)  # 32 - ceil(log2 5)
    bound = layout.error_bound(5, 29, "deterministic")
    assert record["error_bound_per_client"] == pytest.approx(bound / 5)
    float32_rounding = np.abs(expected) * 2.0**-23
    assert np.all(np.abs(got - expected) <= bound + float32_rounding)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4
    assert aggregate.weight_sum == weight
    outcomes = [grid.outcomes[(1, n)].metrics for n in grid.nodes]
    assert aggregate.metric_sums["val-examples"] == sum(m["val-examples"] for m in outcomes)
    assert aggregate.metric_sums["val-accuracy"] == pytest.approx(
        sum(m["val-examples"] * m["val-accuracy"] for m in outcomes), abs=1e-4
    )
    assert aggregate.metric_sums["train-loss"] == pytest.approx(
        sum(m["num-examples"] * m["train-loss"] for m in outcomes), abs=1e-4
    )
    assert [r.status for r in aggregate.reports] == ["trained"] * 5
    assert [r.epsilon for r in aggregate.reports] == [0.1] * 5
    assert (record["cohort"], record["threshold"], record["contributors"]) == (5, 3, 5)
    assert record["dropouts"] == {} and record["aborted"] is None


def test_replies_carry_only_masked_vectors_keys_ciphertexts_and_public_metrics():
    received: list[RecordDict] = []

    class Recording(InProcessGrid):
        def pull_messages(self, message_ids):
            replies = super().pull_messages(message_ids)
            received.extend(r.content for r in replies)
            return replies

    grid = Recording(4)
    secure_round(grid, default_config())
    assert len(received) == 4 * 4  # four stages, four clients
    for content in received:
        assert set(content) <= {"status", "metrics", wire.PROTOCOL_KEY, wire.NEXT_KEYS_KEY}
        assert set(content.get("metrics", {})) <= set(CLEAR_METRICS)
        if "masked_vector" in content[wire.PROTOCOL_KEY]:
            length = VectorLayout.for_run(SMALL_MODEL, default_config()).length
            assert len(content[wire.PROTOCOL_KEY]["masked_vector"]) == 4 * length  # Z_2^32


@pytest.mark.parametrize(
    "action", [wire.SETUP, wire.SHARE_SECRETS, wire.MASKED_INPUT, wire.UNMASK]
)
@pytest.mark.parametrize("num_dropped", [1, 4])
def test_dropouts_at_each_stage_keep_the_survivors_sum(action: str, num_dropped: int):
    grid = InProcessGrid(10)  # complete graph, threshold t = 6
    dropped = set(grid.nodes[2 : 2 + num_dropped])
    grid.drop[action] = dropped
    workflow, aggregate = secure_round(grid, default_config())

    assert not aggregate.aborted
    # Clients that drop after sending their masked input stay in the sum.
    contributors = grid.nodes if action == wire.UNMASK else [n for n in grid.nodes if n not in dropped]
    expected, weight = float_sum(grid, 1, contributors)
    assert aggregate.weight_sum == weight
    assert np.linalg.norm(secure_update(aggregate) - expected) / np.linalg.norm(expected) < 1e-4
    statuses = {r.node_id: r.status for r in aggregate.reports}
    assert {n for n, s in statuses.items() if s == "trained"} == set(contributors)
    (record,) = workflow.describe()["secure_aggregation_rounds"]
    stage = wire.STAGE_OF_ACTION[action]
    assert len(record["dropouts"][stage]) == num_dropped
    assert record["contributors"] == len(contributors)


@pytest.mark.parametrize("action", [wire.SETUP, wire.MASKED_INPUT, wire.UNMASK])
def test_five_of_ten_dropping_aborts_the_round_cleanly(action: str):
    grid = InProcessGrid(10)
    grid.drop[action] = set(grid.nodes[:5])
    workflow, aggregate = secure_round(grid, default_config())

    assert "fewer than the threshold t=6" in aggregate.aborted
    assert aggregate.update_sum == {} and not aggregate.trained
    assert {r.status for r in aggregate.reports} == {"dropped", "aborted"}
    assert workflow.describe()["secure_aggregation_rounds"][0]["aborted"] == aggregate.aborted

    grid.drop.clear()  # the next round starts afresh, with every client
    _, next_round = secure_round(grid, default_config(), server_round=2)
    assert not next_round.aborted and len(next_round.trained) == 10


def test_a_key_exchange_run_ahead_is_continued_and_a_stale_one_is_redone():
    class Logging(InProcessGrid):
        def push_messages(self, messages):
            messages = list(messages)
            action = messages[0].metadata.message_type.split(".", 1)[1]
            sent.append(action)
            if action == wire.SETUP:
                setup_recipients.extend(m.metadata.dst_node_id for m in messages)
            return super().push_messages(messages)

    sent: list[str] = []
    setup_recipients: list[int] = []
    grid, config = Logging(6), default_config()
    five, newcomer = grid.nodes[:5], grid.nodes[5]
    workflow = SecureWorkflow(config)
    round_config = {**config.to_flower(), "server-round": 1}

    workflow.prepare_round(grid, five, to_record(SMALL_MODEL), 1)
    aggregate = workflow.run_round(grid, five, to_record(SMALL_MODEL), round_config, 1)
    assert sent == [wire.SETUP, wire.SHARE_SECRETS, wire.MASKED_INPUT, wire.UNMASK]
    expected, weight = float_sum(grid, 1, five)
    assert aggregate.weight_sum == weight
    assert np.linalg.norm(secure_update(aggregate) - expected) / np.linalg.norm(expected) < 1e-4

    # Prepared for other nodes than the round runs on: the keys are exchanged again. The
    # four prepared for started with the keys they published in round 1, so the exchange
    # ahead had no setup; the one redone needs a setup for all, the published keys spent.
    sent.clear()
    workflow.prepare_round(grid, five[:4], to_record(SMALL_MODEL), 2)
    aggregate = workflow.run_round(grid, five, to_record(SMALL_MODEL),
                                   {**round_config, "server-round": 2}, 2)
    assert sent == [wire.SHARE_SECRETS, wire.SETUP, wire.SHARE_SECRETS, wire.MASKED_INPUT,
                    wire.UNMASK]
    assert len(aggregate.trained) == 5 and not aggregate.aborted
    first, second = workflow.describe()["secure_aggregation_rounds"]
    assert (first["key_exchange_ahead"], second["key_exchange_ahead"]) == (True, False)
    assert (first["keys_published_ahead"], second["keys_published_ahead"]) == (0, 0)

    # Round 3 over a cohort that overlaps round 2's: only the newcomer gets a setup.
    sent.clear()
    setup_recipients.clear()
    cohort = [*five[1:], newcomer]
    workflow.prepare_round(grid, cohort, to_record(SMALL_MODEL), 3)
    aggregate = workflow.run_round(grid, cohort, to_record(SMALL_MODEL),
                                   {**round_config, "server-round": 3}, 3)
    assert sent == [wire.SETUP, wire.SHARE_SECRETS, wire.MASKED_INPUT, wire.UNMASK]
    assert setup_recipients == [newcomer]
    expected, weight = float_sum(grid, 3, cohort)
    assert aggregate.weight_sum == weight and len(aggregate.trained) == 5
    assert np.linalg.norm(secure_update(aggregate) - expected) / np.linalg.norm(expected) < 1e-4
    assert workflow.describe()["secure_aggregation_rounds"][2]["keys_published_ahead"] == 4


def test_the_next_key_exchange_rides_with_the_unmask_stage():
    """Given the next cohort once the training reports are in: for a steady cohort the
    next round's share secrets travel inside the unmask messages; with a newcomer, its
    setup travels beside them and the share secrets follow on their own."""
    class Logging(InProcessGrid):
        def push_messages(self, messages):
            messages = list(messages)
            sent.append(sorted({(int(m.metadata.group_id),
                                 m.metadata.message_type.split(".", 1)[1]) for m in messages}))
            nested.extend(m.metadata.dst_node_id for m in messages
                          if wire.next_round_part(m.content) is not None)
            return super().push_messages(messages)

    sent: list[list[tuple[int, str]]] = []
    nested: list[int] = []
    grid, config = Logging(6), default_config()
    five, newcomer = grid.nodes[:5], grid.nodes[5]
    cohorts = {1: five, 2: five, 3: [*five[1:], newcomer]}
    reported: dict[int, list[str]] = {}
    workflow = SecureWorkflow(config)

    def run(server_round: int):
        def next_cohort(reports):
            reported[server_round] = sorted(r.status for r in reports)
            return cohorts.get(server_round + 1, [])
        if server_round > 1:  # as the federation does: a no-op when the round is open
            workflow.prepare_round(grid, cohorts[server_round], to_record(SMALL_MODEL),
                                   server_round)
        aggregate = workflow.run_round(
            grid, cohorts[server_round], to_record(SMALL_MODEL),
            {**config.to_flower(), "server-round": server_round}, server_round,
            next_cohort=next_cohort)
        expected, weight = float_sum(grid, server_round, cohorts[server_round])
        assert aggregate.weight_sum == weight and len(aggregate.trained) == 5
        assert np.linalg.norm(secure_update(aggregate) - expected) / np.linalg.norm(expected) < 1e-4

    run(1)
    assert reported[1] == ["trained"] * 5  # asked once the clients had trained
    assert sent == [[(1, wire.SETUP)], [(1, wire.SHARE_SECRETS)], [(1, wire.MASKED_INPUT)],
                    [(1, wire.UNMASK)]]
    assert sorted(nested) == sorted(five)  # round 2's share secrets, inside the unmask
    sent.clear()
    nested.clear()
    run(2)  # starts at its masked input; round 3's newcomer is set up beside the unmask
    assert sent == [[(2, wire.MASKED_INPUT)], [(2, wire.UNMASK), (3, wire.SETUP)],
                    [(3, wire.SHARE_SECRETS)]]
    assert nested == []
    sent.clear()
    run(3)
    assert sent == [[(3, wire.MASKED_INPUT)], [(3, wire.UNMASK)]]
    rounds = workflow.describe()["secure_aggregation_rounds"]
    assert [r["key_exchange_ahead"] for r in rounds] == [False, True, True]
    assert [r["shares_with_unmask"] for r in rounds] == [False, True, False]
    assert [r["keys_published_ahead"] for r in rounds] == [0, 5, 4]


def test_a_tampered_share_makes_its_recipient_leave_naming_the_sender():
    victim_index = 1

    def flip_a_bit(action: str, node: int, content: RecordDict) -> None:
        if action == wire.MASKED_INPUT and content[wire.PROTOCOL_KEY]["recipient"] == victim_index:
            ciphertexts = list(content[wire.PROTOCOL_KEY]["ciphertexts"])
            ciphertexts[0] = bytes([ciphertexts[0][0] ^ 1]) + ciphertexts[0][1:]
            content[wire.PROTOCOL_KEY]["ciphertexts"] = ciphertexts

    grid = InProcessGrid(4, tamper=flip_a_bit)
    workflow, aggregate = secure_round(grid, default_config())

    victim = aggregate.reports[victim_index]
    assert victim.status == "dropped"
    assert "stage 'collect_masked_input'" in victim.reason
    assert "share ciphertext from client 0 rejected" in victim.reason
    assert len(aggregate.trained) == 3
    survivors = [n for i, n in enumerate(grid.nodes) if i != victim_index]
    expected, _ = float_sum(grid, 1, survivors)
    assert np.linalg.norm(secure_update(aggregate) - expected) / np.linalg.norm(expected) < 1e-4
    # A client that leaves forgets its round's secrets.
    assert set(grid.contexts[grid.nodes[victim_index]].state) == set()
    assert workflow.describe()["secure_aggregation_rounds"][0]["dropouts"] == {
        "collect_masked_input": ["client-1"]
    }


def test_a_reply_under_another_clients_protocol_id_is_dropped():
    def impersonate(action: str, node: int, content: RecordDict) -> None:
        if action == wire.SETUP and content[wire.RECIPIENT_KEY]["client-id"] == 2:
            content[wire.RECIPIENT_KEY]["client-id"] = 0

    grid = InProcessGrid(4, tamper=impersonate)
    _, aggregate = secure_round(grid, default_config())
    assert aggregate.reports[2].status == "dropped"
    assert "reply claims to come from client 0" in aggregate.reports[2].reason
    assert len(aggregate.trained) == 3


def test_a_masked_vector_travels_as_raw_words_and_a_torn_one_is_refused():
    masked = MaskedInput("run", 1, 3, np.array([0, 1, 2**64 - 1], np.uint64))
    records = wire.to_records(masked)
    assert records[wire.PROTOCOL_KEY]["masked_vector"] == (
        b"\0" * 8 + b"\1" + b"\0" * 7 + b"\xff" * 8)  # little-endian uint64
    back = wire.from_records(RecordDict(records), MaskedInput)
    assert back.masked_vector.dtype == np.uint64
    assert back.masked_vector.tolist() == [0, 1, 2**64 - 1]
    assert not back.masked_vector.flags.writeable  # a view of the record, never a copy

    records[wire.PROTOCOL_KEY]["masked_vector"] = b"\0" * 12
    with pytest.raises(SecAggProtocolError, match="12 bytes, not a whole number of 8-byte"):
        wire.from_records(RecordDict(records), MaskedInput)

    # Z_2^32 travels in 4-byte words, and says so.
    records = wire.to_records(MaskedInput("run", 1, 3, np.array([1, 2**32 - 1], np.uint32)))
    assert records[wire.PROTOCOL_KEY]["masked_vector"] == b"\1\0\0\0" + b"\xff" * 4
    back = wire.from_records(RecordDict(records), MaskedInput)
    assert back.masked_vector.dtype == np.uint32
    assert back.masked_vector.tolist() == [1, 2**32 - 1]
    for word_bytes in (2, [4], None):  # a wrong size, a list, none at all
        if word_bytes is None:
            del records[wire.PROTOCOL_KEY]["masked_vector:word-bytes"]
        else:
            records[wire.PROTOCOL_KEY]["masked_vector:word-bytes"] = word_bytes
        with pytest.raises(SecAggProtocolError, match=re.escape(f"word size {word_bytes}")):
            wire.from_records(RecordDict(records), MaskedInput)
    with pytest.raises(SecAggProtocolError, match="float64 array"):
        wire.to_records(MaskedInput("run", 1, 3, np.zeros(2)))


def test_the_next_rounds_records_nest_under_a_prefix_and_come_back_whole():
    unmask = wire.to_records(MaskedInput("run", 1, 3, np.array([7], np.uint32)))
    share = {**wire.to_records(MaskedInput("run", 2, 3, np.array([9], np.uint32))),
             wire.RECIPIENT_KEY: ConfigRecord({"client-id": 3})}
    content = RecordDict({**unmask, **wire.nest(share)})
    assert set(content) == {wire.PROTOCOL_KEY, "next-" + wire.PROTOCOL_KEY,
                            "next-" + wire.RECIPIENT_KEY}
    assert wire.from_records(content, MaskedInput).round_id == 1  # its own part untouched
    part = wire.next_round_part(content)
    assert set(part) == {wire.PROTOCOL_KEY, wire.RECIPIENT_KEY}
    assert wire.from_records(part, MaskedInput).masked_vector.tolist() == [9]
    assert wire.next_round_part(RecordDict(unmask)) is None


def test_a_reply_without_a_status_is_a_dropout_not_a_crash():
    class Stripping(InProcessGrid):
        def _deliver(self, action, node, message):
            reply = super()._deliver(action, node, message)
            if action == wire.SHARE_SECRETS and node == self.nodes[1]:
                del reply.content["status"]
            return reply

    grid = Stripping(4)
    _, aggregate = secure_round(grid, default_config())
    assert aggregate.reports[1].status == "dropped"
    assert "stage 'share_secrets': malformed reply: no status" in aggregate.reports[1].reason
    assert len(aggregate.trained) == 3


class RepeatedKeyGrid(InProcessGrid):
    """Node 1 publishes the same public key twice for its next round."""

    def pull_messages(self, message_ids):
        replies = super().pull_messages(message_ids)
        for reply in replies:
            if reply.metadata.src_node_id == self.nodes[1] and wire.NEXT_KEYS_KEY in reply.content:
                keys = reply.content[wire.NEXT_KEYS_KEY]
                keys["mask-public-key"] = keys["share-public-key"]
        return replies


def test_a_node_without_its_published_keys_drops_and_malformed_keys_get_a_setup():
    class Garbling(RepeatedKeyGrid):
        def push_messages(self, messages):
            messages = list(messages)
            if messages[0].metadata.message_type.endswith(wire.SETUP):
                setup_recipients.extend(m.metadata.dst_node_id for m in messages)
            return super().push_messages(messages)

    setup_recipients: list[int] = []
    grid, config = Garbling(5), default_config()
    workflow = SecureWorkflow(config)
    for server_round in (1, 2):
        if server_round == 2:  # node 0 lost the private keys it published
            del grid.contexts[grid.nodes[0]].state[NEXT_KEYS_STATE_KEY]
            setup_recipients.clear()
        aggregate = workflow.run_round(grid, grid.nodes, to_record(SMALL_MODEL),
                                       {**config.to_flower(), "server-round": server_round},
                                       server_round)
    assert setup_recipients == [grid.nodes[1]]
    (report,) = [r for r in aggregate.reports if r.node_id == grid.nodes[0]]
    assert report.status == "dropped"
    assert "published keys, and this node has none" in report.reason
    expected, weight = float_sum(grid, 2, grid.nodes[1:])
    assert aggregate.weight_sum == weight and len(aggregate.trained) == 4
    assert np.linalg.norm(secure_update(aggregate) - expected) / np.linalg.norm(expected) < 1e-4
    record = workflow.describe()["secure_aggregation_rounds"][1]
    assert record["keys_published_ahead"] == 4
    assert record["dropouts"] == {"share_secrets": ["client-0"]}


def test_with_the_unmask_stage_a_node_without_usable_keys_leaves_only_the_next_round():
    """Next round's share secrets inside the unmask messages: node 0 lost its kept keys
    before the unmask, node 1 published malformed keys (and cannot get a setup while still
    in the round); both complete this round's unmask and drop out of the next round."""
    class Losing(RepeatedKeyGrid):
        def push_messages(self, messages):
            messages = list(messages)
            if (messages[0].metadata.message_type.endswith(wire.UNMASK)
                    and messages[0].metadata.group_id == "1"):
                del self.contexts[self.nodes[0]].state[NEXT_KEYS_STATE_KEY]
            return super().push_messages(messages)

    grid, config = Losing(5), default_config()
    workflow = SecureWorkflow(config)
    first = workflow.run_round(grid, grid.nodes, to_record(SMALL_MODEL),
                               {**config.to_flower(), "server-round": 1}, 1,
                               next_cohort=lambda reports: grid.nodes)
    assert len(first.trained) == 5  # both unmasked round 1
    expected, weight = float_sum(grid, 1, grid.nodes)
    assert np.linalg.norm(secure_update(first) - expected) / np.linalg.norm(expected) < 1e-4
    second = workflow.run_round(grid, grid.nodes, to_record(SMALL_MODEL),
                                {**config.to_flower(), "server-round": 2}, 2)
    reasons = {r.client_id: r.reason for r in second.reports if r.status == "dropped"}
    assert "published keys, and this node has none" in reasons["client-0"]
    assert "published no usable keys in the round before" in reasons["client-1"]
    expected, weight = float_sum(grid, 2, grid.nodes[2:])
    assert second.weight_sum == weight and len(second.trained) == 3
    assert np.linalg.norm(secure_update(second) - expected) / np.linalg.norm(expected) < 1e-4
    record = workflow.describe()["secure_aggregation_rounds"][1]
    assert record["shares_with_unmask"] and record["keys_published_ahead"] == 4
    assert record["dropouts"] == {"share_keys": ["client-1"], "share_secrets": ["client-0"]}


def test_every_secret_of_the_round_is_wiped_from_the_nodes_after_it():
    grid = InProcessGrid(3)
    secure_round(grid, default_config())
    for context in grid.contexts.values():  # only the key pairs kept for the next round
        assert set(context.state) == {NEXT_KEYS_STATE_KEY}


def test_client_level_dp_weights_clients_equally_and_adds_noise_of_std_sigma_c():
    config = default_config(**{"client-dp": True, "client-noise-multiplier": 2.0,
                               "client-clip-norm": 0.5})
    grid = InProcessGrid(4)
    grid.drop[wire.MASKED_INPUT] = {grid.nodes[3]}
    # 12,000 coordinates: the sample std is within 5% of the true one with probability
    # 1 - 1e-14 (its relative standard error is 1 / sqrt(2 * 12,000) = 0.65%).
    _, aggregate = secure_round(grid, config, model={"fc.weight": np.zeros((100, 120), np.float32)})

    assert aggregate.weight_sum == 3  # uniform weights: the number of contributors
    clipped = []
    for node in grid.nodes[:3]:
        update = flat_update(grid.outcomes[(1, node)])
        clipped.append(update * min(1.0, 0.5 / np.linalg.norm(update)))
    noise = secure_update(aggregate) - np.sum(clipped, axis=0)
    # Three of four noise shares of std sigma C / sqrt(4) reached the sum.
    assert noise.std() == pytest.approx(2.0 * 0.5 * np.sqrt(3 / 4), rel=0.05)


def test_protocol_threshold_follows_the_fraction_and_never_drops_below_a_majority():
    def threshold(n: int, fraction: float) -> tuple[int, int]:
        config = default_config(**{"secagg-threshold-fraction": fraction})
        params = protocol_config(config, n, VectorLayout.for_run(SMALL_MODEL, config))
        return params.degree, params.threshold

    assert threshold(10, 0.5) == (9, 6)
    assert threshold(10, 0.8) == (9, 8)
    assert threshold(10, 1.0) == (9, 10)
    assert threshold(2, 0.5) == (1, 2)
    degree, t = threshold(100, 0.5)
    assert degree < 20 and t == (degree + 1) // 2 + 1


def test_aborted_round_keeps_the_model_the_next_proceeds_and_dp_shortfall_is_charged(tmp_path):
    config = default_config(**{
        "num-server-rounds": 3, "out-dir": str(tmp_path), "client-dp": True,
        "client-noise-multiplier": 1.5, "accountant": "rdp",
    })
    grid = InProcessGrid(4)  # threshold 3 of 4
    workflow = SecureWorkflow(config)

    grid.drop_in_round[(1, wire.MASKED_INPUT)] = {grid.nodes[0]}  # one dropout, survived
    grid.drop_in_round[(2, wire.SHARE_SECRETS)] = set(grid.nodes[:2])  # aborted
    summary = run_federation(grid, config, workflow=workflow)

    r1, r2, r3 = summary["rounds"]
    assert (r1["trained"], r2["trained"], r3["trained"]) == (3, 0, 4)
    assert (r2["accuracy"], r2["loss"]) == (r1["accuracy"], r1["loss"])  # model unchanged
    assert summary["rounds_completed"] == 3
    rounds = summary["secure_aggregation_rounds"]
    assert rounds[0]["dropouts"] == {"collect_masked_input": ["client-0"]}
    assert "aborted at stage 'share_secrets'" in rounds[1]["aborted"]
    # Rounds 2 and 3 exchanged keys during the round before; round 2's failed there.
    assert [r["key_exchange_ahead"] for r in rounds] == [False, True, True]
    assert rounds[2]["aborted"] is None and rounds[2]["contributors"] == 4
    on_disk = json.loads((Path(summary["results_dir"]) / "summary.json").read_text())
    assert on_disk["secure_aggregation"] is True
    assert on_disk["secure_aggregation_parameters"]["client_dp"]["noise_multiplier"] == 1.5

    # Client-level epsilon: round 1 charged with the reduced multiplier 1.5 sqrt(3/4),
    # round 2 released nothing, round 3 the full 1.5; an Opacus accountant agrees.
    level = on_disk["client_level_epsilon"]
    assert set(level["by_round"]) == {"1", "3"}
    assert level["by_round"]["1"]["effective_noise_multiplier"] == pytest.approx(1.5 * np.sqrt(0.75))
    assert level["by_round"]["3"]["effective_noise_multiplier"] == 1.5
    assert level["by_round"]["1"]["epsilon"] < level["by_round"]["3"]["epsilon"] == level["epsilon"]
    reference = RDPAccountant()
    reference.step(noise_multiplier=1.5 * np.sqrt(0.75), sample_rate=1.0)
    reference.step(noise_multiplier=1.5, sample_rate=1.0)
    assert level["epsilon"] == pytest.approx(reference.get_epsilon(delta=config.delta), abs=1e-4)
    assert level["epsilon"] >= reference.get_epsilon(delta=config.delta)
    # Clients train at the masked-input stage: client-0's message for it never came in
    # round 1, and round 2 ended before it, so nobody trained (or spent budget) in vain.
    assert {k: c["rounds_trained"] for k, c in on_disk["client_epsilon"].items()} == {
        "client-0": 1, "client-1": 2, "client-2": 2, "client-3": 2}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"secagg-threshold-fraction": 0.4}, "'secagg-threshold-fraction' must be in [0.5, 1]"),
        ({"secagg-clip-range": 0.0}, "'secagg-clip-range' must be > 0"),
        ({"secagg-weight-scale": -1.0}, "'secagg-weight-scale' must be > 0"),
        ({"min-train-clients": 1}, "'min-train-clients' must be >= 2 with secure-aggregation on"),
        ({"client-dp": True, "secure-aggregation": False},
         "'client-dp' must be false unless secure-aggregation is true"),
        ({"client-dp": True, "client-noise-multiplier": 0.0}, "'client-noise-multiplier' must be > 0"),
        ({"client-dp": True, "client-clip-norm": 9.0}, "'client-clip-norm' must be in (0, secagg-clip-range=8]"),
        ({"secure-aggregation": "sometimes"}, "'secure-aggregation' must be true or false"),
    ],
)
def test_secure_aggregation_keys_are_validated_naming_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as error:
        default_config(**overrides)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_cli_no_secagg_is_the_plain_baseline(tmp_path):
    result = CliRunner().invoke(
        cli.app,
        ["simulate", "--no-secagg", "--set", "client-dp=true", "--out", str(tmp_path / "runs")],
    )
    assert result.exit_code == 2
    assert "config key 'client-dp' must be false unless secure-aggregation is true" in " ".join(
        result.output.split()
    )
    assert default_config().secure_aggregation is True


# ---------------------------------------------------------------- slow, real simulations
#
# Real Flower simulations (Ray backend) of the digits scenario. The server's workflow is
# wrapped to record every reply it receives; a test-only client mod copies each client's
# unmasked input into its masked-input reply, so the test can compare the two (the
# workflow never reads that record).

TRUE_INPUT_KEY = "test-true-input"


def expose_true_input(msg, context, call_next):
    """Test-only ClientApp mod: attach the input the client masks (what
    ``client.secure_aggregation.secure_input`` returns while the handler runs)."""
    if msg.metadata.message_type != wire.message_type(wire.MASKED_INPUT):
        return call_next(msg, context)
    kept = []
    original = secure_aggregation.secure_input

    def keep(*args, **kwargs):
        kept.append(original(*args, **kwargs))
        return kept[-1]

    secure_aggregation.secure_input = keep
    try:
        reply = call_next(msg, context)
    finally:
        secure_aggregation.secure_input = original
    if kept:
        reply.content[TRUE_INPUT_KEY] = ArrayRecord({"input": Array(kept[-1].copy())})
    return reply


def client_app_exposing_inputs() -> ClientApp:
    """The real ClientApp's handlers behind :func:`expose_true_input`."""
    app = ClientApp(mods=[expose_true_input])
    app.train()(client_main.train)
    for action, handler in (
        (wire.SETUP, client_main.secagg_setup),
        (wire.SHARE_SECRETS, client_main.secagg_share_secrets),
        (wire.MASKED_INPUT, client_main.secagg_masked_input),
        (wire.UNMASK, client_main.secagg_unmask),
    ):
        app.train(action)(handler)
    return app


class RecordingGrid:
    """Flower's grid, keeping every reply the server receives (and letting a test
    interfere with what it sends: ``interfere(server_round, action, messages) -> messages``)."""

    def __init__(self, grid, replies: list, interfere=None) -> None:
        self._grid, self._replies, self._interfere = grid, replies, interfere

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def push_messages(self, messages):
        messages = list(messages)
        if self._interfere is not None:  # by stage: a Message round may carry two
            stages: dict[tuple[int, str], list] = {}
            for m in messages:
                stages.setdefault((int(m.metadata.group_id),
                                   m.metadata.message_type.split(".", 1)[1]), []).append(m)
            messages = [m for (server_round, action), batch in stages.items()
                        for m in self._interfere(server_round, action, batch)]
        self._replies.append([])  # the replies of this Message round
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        replies = list(self._grid.pull_messages(message_ids))
        self._replies[-1].extend(replies)
        return replies


class RecordingWorkflow(SecureWorkflow):
    """SecureWorkflow over a :class:`RecordingGrid`, keeping each round's aggregate."""

    def __init__(self, config, interfere=None) -> None:
        super().__init__(config)
        self.replies: list[list] = []
        self.aggregates: list = []
        self._interfere = interfere

    def prepare_round(self, grid, node_ids, arrays, server_round, timeout=None):
        super().prepare_round(RecordingGrid(grid, self.replies, self._interfere), node_ids,
                              arrays, server_round, timeout)

    def run_round(self, grid, node_ids, arrays, config, server_round, timeout=None,
                  per_node=None, next_cohort=None):
        aggregate = super().run_round(
            RecordingGrid(grid, self.replies, self._interfere), node_ids, arrays, config,
            server_round, timeout, per_node, next_cohort,
        )
        self.aggregates.append(aggregate)
        return aggregate


def simulate_with(config, num_clients: int, workflow, client_app) -> dict:
    """Like simulations.run.simulate, with our own workflow and ClientApp."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    summaries: list[dict] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        summaries.append(run_federation(grid, config, workflow=workflow))

    logging.getLogger("flwr").setLevel(logging.ERROR)
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_clients,
                   backend_config=backend_config(), verbose_logging=False)
    (summary,) = summaries
    return summary


def signed(masked: np.ndarray) -> np.ndarray:
    """A masked vector read as signed words (Z_2^32 or Z_2^64, as the ring's decoder reads them)."""
    return masked.view(np.dtype(f"int{8 * masked.dtype.itemsize}")).astype(np.float64)


@pytest.fixture(scope="module")
def recorded_secure_run(tmp_path_factory):
    """Secure aggregation, no DP (so the plain baseline is deterministic), 3 clients."""
    config = default_config(**{"num-server-rounds": 2, "local-epochs": 1, "dp": False,
                               "out-dir": str(tmp_path_factory.mktemp("secure"))})
    workflow = RecordingWorkflow(config)
    summary = simulate_with(config, 3, workflow, client_app_exposing_inputs())
    return config, workflow, summary


@pytest.mark.slow
def test_simulation_server_cannot_read_any_update_but_unmasks_the_exact_sum(recorded_secure_run):
    config, workflow, summary = recorded_secure_run
    assert summary["rounds_completed"] == 2 and summary["secure_aggregation"] is True
    layout = None
    masked: dict[str, list[np.ndarray]] = {}
    true: dict[str, list[np.ndarray]] = {}
    stage_replies = [r for round_replies in workflow.replies for r in round_replies]
    # Every reply: four Message rounds in round 1, two in round 2 (no setup: the clients
    # published their keys in round 1; its share secrets rode in round 1's unmask), three
    # clients.
    assert len(stage_replies) == (4 + 2) * 3
    assert sum(wire.next_round_part(r.content) is not None for r in stage_replies) == 3
    for reply in stage_replies:
        content = reply.content
        assert "update" not in content
        assert set(content) <= {"status", "metrics", "ledger", wire.PROTOCOL_KEY,
                                wire.NEXT_KEYS_KEY, TRUE_INPUT_KEY,
                                *wire.nest({"status": 0, wire.PROTOCOL_KEY: 0})}
        assert set(content.get("metrics", {})) <= set(CLEAR_METRICS)
        if TRUE_INPUT_KEY in content:
            client = str(content["status"]["client-id"])
            masked.setdefault(client, []).append(
                wire.from_records(content, MaskedInput).masked_vector)
            true.setdefault(client, []).append(content[TRUE_INPUT_KEY]["input"].numpy())
    assert sorted(masked) == ["client-0", "client-1", "client-2"]

    for client in masked:
        y, x = np.concatenate(masked[client]), np.concatenate(true[client])
        assert y.size >= 100_000
        # Without masks the quantised input would correlate perfectly with the update...
        assert np.corrcoef(x, np.rint(x * 1e8))[0, 1] > 0.999
        # ...masked, it is statistically independent of it (|r| ~ 1/sqrt(size) = 0.003).
        assert abs(np.corrcoef(signed(y), x)[0, 1]) < 0.01, client

    # The unmasked sum matches the plain float sum of the same inputs, within the bound.
    for server_round, aggregate in enumerate(workflow.aggregates):
        arrays = {k: v for k, v in aggregate.update_sum.items()}
        layout = VectorLayout.for_run(arrays, config)
        inputs = [true[c][server_round] for c in sorted(true)]
        plain = layout.unpack(np.sum(inputs, axis=0))
        expected = np.concatenate([v.astype(np.float64).ravel() for v in plain.update_sum.values()])
        got = secure_update(aggregate)
        record = workflow.describe()["secure_aggregation_rounds"][server_round]
        assert (record["quant_bits"], record["modulus_bits"]) == (30, 32)  # 32 - ceil(log2 3)
        bound = layout.error_bound(3, record["quant_bits"], "deterministic")
        assert np.all(np.abs(got - expected) <= bound + np.abs(expected) * 2.0**-22)
        assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4
        assert aggregate.weight_sum == plain.weight_sum


@pytest.mark.slow
def test_simulation_accuracy_with_secure_aggregation_matches_plain(recorded_secure_run, tmp_path):
    config, _, secure = recorded_secure_run
    plain_config = default_config(**{**config.to_flower(), "secure-aggregation": False,
                                     "out-dir": str(tmp_path)})
    plain = simulate(plain_config, 3)

    assert plain["secure_aggregation"] is False
    assert secure["accuracy"] > 0.5 and plain["accuracy"] > 0.5
    assert abs(secure["accuracy"] - plain["accuracy"]) <= 0.02
    # Same seed, no DP noise: the two federations reach (almost) the same model.
    secure_model = torch.load(Path(secure["results_dir"]) / "model.pt")
    plain_model = torch.load(Path(plain["results_dir"]) / "model.pt")
    for name, weights in plain_model.items():
        assert torch.allclose(secure_model[name], weights, atol=1e-3), name


@pytest.mark.slow
def test_simulation_dropouts_midway_and_an_aborted_round_with_client_level_dp(tmp_path):
    """Round 1: a client fails mid-protocol (a share addressed to it is corrupted) and the
    round completes with the other two. Round 2: two of three clients vanish (its share
    secrets come after a setup for the client that left round 1, so in a Message round of
    their own), the round aborts below the threshold t=2 before anyone trains, the model
    is unchanged. Round 3 proceeds."""
    config = default_config(**{"num-server-rounds": 3, "local-epochs": 1,
                               "target-epsilon": 8.0, "client-dp": True,
                               "client-noise-multiplier": 0.5, "client-clip-norm": 0.1,
                               "out-dir": str(tmp_path)})

    def interfere(server_round, action, messages):
        if server_round == 1 and action == wire.MASKED_INPUT:
            for m in messages:
                record = m.content[wire.PROTOCOL_KEY]
                if record["recipient"] == 1:
                    first = record["ciphertexts"][0]
                    record["ciphertexts"] = [bytes([first[0] ^ 1]) + first[1:],
                                             *record["ciphertexts"][1:]]
        if server_round == 2 and action == wire.SHARE_SECRETS:
            return messages[:1]
        return messages

    workflow = RecordingWorkflow(config, interfere)
    summary = simulate_with(config, 3, workflow, client_app_exposing_inputs())

    r1, r2, r3 = summary["rounds"]
    assert (r1["trained"], r2["trained"], r3["trained"]) == (2, 0, 3)
    assert (r2["accuracy"], r2["loss"]) == (r1["accuracy"], r1["loss"])
    victim = workflow.aggregates[0].reports[1]
    assert victim.status == "dropped" and "share ciphertext from client 0 rejected" in victim.reason
    rounds = summary["secure_aggregation_rounds"]
    assert rounds[0]["dropouts"] == {"collect_masked_input": [victim.client_id]}
    assert rounds[1]["aborted"].startswith("secure aggregation aborted at stage 'share_secrets'")
    assert rounds[2]["contributors"] == 3

    # Each round's reply carried only the ledger entry the merged copy lacked, the dropped
    # client's included, and the merged copy holds every charge: none in round 2.
    shipped: dict[str, list[list[int]]] = {}
    for reply in (r for stage in workflow.replies for r in stage if "ledger" in r.content):
        fields = reply.content["ledger"]
        shipped.setdefault(str(fields["client-id"]), []).append(
            [json.loads(text)["seq"] for text in fields["entries"]])
    assert shipped == {c: [[1], [2]] for c in ("client-0", "client-1", "client-2")}
    with PrivacyLedger(Path(summary["results_dir"]) / "ledger.sqlite", read_only=True) as merged:
        assert merged.verify().ok and len(merged.entries()) == 6

    level = summary["client_level_epsilon"]
    assert set(level["by_round"]) == {"1", "3"}
    assert level["by_round"]["1"]["effective_noise_multiplier"] == pytest.approx(0.5 * np.sqrt(2 / 3))
    assert 0 < level["by_round"]["1"]["epsilon"] < level["epsilon"]
    # Sample-level epsilon was spent in rounds 1 and 3 (the dropped client's included);
    # round 2 ended before anyone trained.
    for client in summary["client_epsilon"].values():
        assert client["rounds_trained"] == 2 and set(client["by_round"]) == {"1", "3"}
        assert 0 < client["by_round"]["1"] < client["by_round"]["3"] <= 8.0
