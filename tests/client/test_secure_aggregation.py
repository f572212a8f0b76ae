"""The client's side of secure aggregation: what goes into the sum, and what stays home."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client import secure_aggregation
from client.secure_aggregation import NEXT_KEYS_STATE_KEY, STATE_KEY, secure_input
from privacy.secagg import dequantize, quantize
from server.secure_workflow import SecureWorkflow
from task import secagg_wire as wire
from task.records import to_record
from task.secure_vector import EXTRA_COORDINATES, VectorLayout
from tests.inprocess_grid import InProcessGrid, default_config, flat_update, synthetic_outcome

MODEL = {"w": np.zeros((200, 300), np.float32), "b": np.zeros(300, np.float32)}


def test_input_is_the_update_and_metrics_weighted_by_examples_over_w():
    config = default_config()
    outcome = synthetic_outcome(MODEL, partition=2, server_round=1)
    layout = VectorLayout.for_run(MODEL, config)
    vector = secure_input(outcome, config, layout, expected_clients=4)

    n, m, w = 120, 12, config.secagg_weight_scale
    assert vector.shape == (layout.model_length + len(EXTRA_COORDINATES),)
    np.testing.assert_allclose(vector[: layout.model_length], n / w * flat_update(outcome))
    extras = dict(zip(EXTRA_COORDINATES, vector[layout.model_length :]))
    assert extras["weight"] == extras["num-examples"] == n / w
    assert extras["train-loss"] == pytest.approx(n / w * 1.8)
    assert extras["val-accuracy"] == pytest.approx(m / w * 0.5)
    assert extras["val-examples"] == m / w and extras["clipped-fraction"] == 0.0


def test_client_dp_clips_to_c_then_adds_a_noise_share_of_std_sigma_c_over_sqrt_n():
    config = default_config(**{"client-dp": True, "client-noise-multiplier": 1.2,
                               "client-clip-norm": 0.5})
    outcome = synthetic_outcome(MODEL, partition=0, server_round=1, scale=1.0)
    layout = VectorLayout.for_run(MODEL, config)
    vector = secure_input(outcome, config, layout, expected_clients=9)

    update = flat_update(outcome)
    clipped = update * 0.5 / np.linalg.norm(update)
    noise = vector[: layout.model_length] - clipped  # uniform weight 1, no 1/W
    assert noise.std() == pytest.approx(1.2 * 0.5 / 3, rel=0.02)
    assert abs(noise.mean()) < 5 * 0.2 / np.sqrt(noise.size)
    assert vector[layout.model_length] == 1.0  # weight


def test_layout_reads_the_sum_back_in_plain_units_and_counts_clipped_coordinates():
    config = default_config(**{"secagg-clip-range": 1.0})
    layout = VectorLayout.for_run(MODEL, config)
    outcomes = [synthetic_outcome(MODEL, p, 1) for p in range(3)]
    vectors = [layout.pack(layout.flatten(o.update), o.metrics) for o in outcomes]
    totals = layout.unpack(np.sum(vectors, axis=0))

    expected = sum(o.metrics["num-examples"] * flat_update(o) for o in outcomes)
    got = np.concatenate([v.ravel() for v in totals.update_sum.values()])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert totals.update_sum["w"].dtype == np.float32
    assert totals.weight_sum == 100 + 110 + 120
    assert totals.metric_sums["val-examples"] == 10 + 11 + 12
    assert totals.clipped_coordinates == 0

    for beyond in (20.0, -20.0):  # 0.1 * |20| > R = 1, above the range and below it
        big = outcomes[0].update | {"b": np.full(300, beyond, np.float32)}
        vector = layout.pack(layout.flatten(big), outcomes[0].metrics)
        assert layout.unpack(vector).clipped_coordinates == 300


@pytest.mark.parametrize("clients", [100, 150])
def test_the_32_bit_ring_keeps_every_integer_total_exact_at_its_largest_cohort(clients):
    """At the edge of the 32-bit ring (digits-sized model, q = 25 for 100, q = 24 for 150),
    the counts and the clipped-coordinate count of the decoded sum are exact integers."""
    model = {"w": np.zeros(44_426, np.float32)}
    config = default_config()
    layout = VectorLayout.for_run(model, config)
    q, b = layout.ring(clients, "deterministic")
    assert (q, b) == (32 - (clients - 1).bit_length(), 32)
    assert layout.ring(1000, "deterministic") == (32, 64)

    gen = np.random.default_rng(3)
    total = np.zeros(layout.length, np.uint32)
    want = {"num-examples": 0, "val-examples": 0, "clipped": 0}
    for _ in range(clients):
        n, m, clipped = (int(v) for v in gen.integers([1, 0, 0], [600, 100, 3000]))
        update = gen.normal(0, 1e-3, layout.model_length)
        update[:clipped] = 2 * layout.clip_range * layout.weight_scale / n  # weighted: 2 R
        metrics = {"num-examples": n, "val-examples": m, "train-loss": 1.0, "val-loss": 1.0,
                   "val-accuracy": 0.5, "train-seconds": 0.1}
        vector = layout.pack(update, metrics)
        total += quantize(vector, clip_range=layout.clip_range, quant_bits=q, modulus_bits=b)
        want["num-examples"] += n
        want["val-examples"] += m
        want["clipped"] += clipped
    totals = layout.unpack(dequantize(total, clip_range=layout.clip_range, quant_bits=q,
                                      modulus_bits=b))
    assert totals.metric_sums["num-examples"] == want["num-examples"]
    assert totals.metric_sums["val-examples"] == want["val-examples"]
    assert totals.weight_sum == want["num-examples"]
    assert totals.clipped_coordinates == want["clipped"]
    assert layout.integer_error_bound(clients, q, "deterministic") < 0.5


def test_a_declined_round_adds_zeros_and_under_client_dp_its_noise_share():
    declined = synthetic_outcome(MODEL, partition=0, server_round=1)
    declined.update, declined.declined = {}, True
    config = default_config()
    layout = VectorLayout.for_run(MODEL, config)
    assert not secure_input(declined, config, layout, expected_clients=4).any()

    config = default_config(**{"client-dp": True, "client-noise-multiplier": 1.2,
                               "client-clip-norm": 0.5})
    vector = secure_input(declined, config, layout, expected_clients=9)
    assert vector[: layout.model_length].std() == pytest.approx(1.2 * 0.5 / 3, rel=0.02)
    assert not vector[layout.model_length :].any()  # weight, counts and metrics: zero


def assert_sum_of(aggregate, outcomes, workflow) -> None:
    """``aggregate`` holds the weighted sum of exactly ``outcomes``, within the bound the
    round's quantisation gives each of its contributors (and float32's rounding)."""
    record = workflow.describe()["secure_aggregation_rounds"][-1]
    bound = record["contributors"] * record["error_bound_per_client"]
    expected = sum(o.metrics["num-examples"] * flat_update(o) for o in outcomes)
    got = np.concatenate([v.ravel() for v in aggregate.update_sum.values()])
    np.testing.assert_allclose(got, expected, rtol=2.0**-22, atol=bound)
    assert aggregate.weight_sum == sum(o.metrics["num-examples"] for o in outcomes)


def test_a_client_that_declines_stays_in_the_sum_without_changing_it():
    config = default_config()

    class Declining(InProcessGrid):
        def _deliver(self, action, node, message):
            if action == wire.MASKED_INPUT and node == self.nodes[1]:
                outcome = synthetic_outcome(MODEL, 1, 1)
                outcome.update, outcome.declined = {}, True
                outcome.reason = "client-1 declines round 1: its epsilon would reach 9"
                return secure_aggregation.mask_input(message, self.contexts[node], config,
                                                     outcome)
            return super()._deliver(action, node, message)

    grid = Declining(3)
    workflow = SecureWorkflow(config)
    aggregate = workflow.run_round(
        grid, grid.nodes, to_record(MODEL), {**config.to_flower(), "server-round": 1}, 1
    )
    assert [r.status for r in aggregate.reports] == ["trained", "declined", "trained"]
    assert aggregate.reports[1].reason == "client-1 declines round 1: its epsilon would reach 9"
    assert aggregate.reports[1].epsilon == pytest.approx(0.1)  # its public metrics
    record = workflow.describe()["secure_aggregation_rounds"][0]
    assert record["dropouts"] == {} and record["contributors"] == 3  # no recovery needed
    assert_sum_of(aggregate, [grid.outcomes[(1, n)] for n in (grid.nodes[0], grid.nodes[2])],
                  workflow)


def test_layout_rejects_an_update_in_another_parameter_order():
    layout = VectorLayout.for_run(MODEL, default_config())
    with pytest.raises(ValueError, match="parameters"):
        layout.flatten({"b": MODEL["b"], "w": MODEL["w"]})


def _bytes_in(content: RecordDict) -> set[bytes]:
    found: set[bytes] = set()
    for record in content.values():
        for value in record.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bytes):
                    found.add(item)
    return found


def test_the_input_never_waits_in_the_state_and_every_secret_is_then_wiped(monkeypatch):
    state_keys: dict[tuple[int, str], set[str]] = {}
    sent: set[bytes] = set()
    private: dict[int, set[bytes]] = {1: set(), 2: set()}
    channel_keys: set[bytes] = set()
    published: dict[int, ConfigRecord] = {}  # node -> next-round key pairs, as kept

    class Watching(InProcessGrid):
        def push_messages(self, messages):
            messages = list(messages)
            action = messages[0].metadata.message_type.split(".", 1)[1]
            server_round = int(messages[0].metadata.group_id)
            answered = super().push_messages(messages)  # delivered and answered at once
            state_keys[server_round, action] = set(self.contexts[self.nodes[0]].state)
            for message_id in answered:
                sent.update(_bytes_in(self._replies[message_id].content))
            if action == wire.MASKED_INPUT and server_round == 1:
                for node in self.nodes:
                    published[node] = self.contexts[node].state[NEXT_KEYS_STATE_KEY]
            return answered

    state_dict = secure_aggregation.SecAggClient.state_dict

    def remembering(self):
        state = state_dict(self)
        server_round = int(state.get("setup.round_id", 0))
        if server_round:
            private[server_round].update(
                v for k, v in state.items() if k.endswith("private_key") and v)
        channel_keys.update(state["inbound_keys"])
        return state

    monkeypatch.setattr(secure_aggregation.SecAggClient, "state_dict", remembering)
    grid, config = Watching(3), default_config()
    workflow = SecureWorkflow(config)
    for server_round in (1, 2):
        aggregate = workflow.run_round(grid, grid.nodes, to_record(MODEL),
                                       {**config.to_flower(), "server-round": server_round},
                                       server_round,
                                       next_cohort=lambda _, r=server_round: grid.nodes * (r < 2))
        assert len(aggregate.trained) == 3

    # The plain input never waits in the state: it is made and masked in one handler,
    # beside which only the key pairs made for the next round are kept.
    assert state_keys[1, wire.SETUP] == {STATE_KEY}
    assert state_keys[1, wire.SHARE_SECRETS] == {STATE_KEY}
    assert state_keys[1, wire.MASKED_INPUT] == {STATE_KEY, NEXT_KEYS_STATE_KEY}
    # Round 2's share secrets ride in round 1's unmask message: once round 1 is unmasked
    # and wiped, round 2 starts with the kept keys (no setup, no Message round of its own),
    # which are gone from the state once used.
    assert state_keys[1, wire.UNMASK] == {STATE_KEY}
    assert {(2, wire.SETUP), (2, wire.SHARE_SECRETS)}.isdisjoint(state_keys)
    assert state_keys[2, wire.MASKED_INPUT] == {STATE_KEY, NEXT_KEYS_STATE_KEY}
    assert state_keys[2, wire.UNMASK] == {NEXT_KEYS_STATE_KEY}  # no round 3 to start
    next_private = {bytes(v) for keys in published.values() for k, v in keys.items()
                    if k.endswith("private-key")}
    assert private[2] == next_private  # round 2 used exactly the keys kept for it...
    assert len(private[1]) == len(private[2]) == 6  # ...two fresh pairs per client a round
    assert not private[1] & private[2]
    assert not (private[1] | private[2]) & sent  # private halves never left their nodes
    assert len(channel_keys) == 12 and not channel_keys & sent  # nor did the share keys
    rounds = workflow.describe()["secure_aggregation_rounds"]
    assert [r["keys_published_ahead"] for r in rounds] == [0, 3]
    assert [r["shares_with_unmask"] for r in rounds] == [False, True]


def test_a_stage_without_a_round_in_progress_fails_with_a_clear_reason():
    grid = InProcessGrid(1)
    context: Context = grid.contexts[grid.nodes[0]]
    msg = Message(RecordDict(), dst_node_id=grid.nodes[0],
                  message_type=wire.message_type(wire.SHARE_SECRETS))
    msg.metadata.__dict__["_message_id"] = "m1"
    reply = secure_aggregation.share_secrets(msg, context)
    assert reply.content["status"]["status"] == "failed"
    assert reply.content["status"]["reason"] == (
        "no secure aggregation round in progress on this node"
    )


@pytest.mark.parametrize("kept", [b"\xc1", b"\x93\x01", b"\x01", b"", b"\xc4\x03key"])
def test_an_unreadable_protocol_state_fails_the_stage_and_is_forgotten(kept):
    grid = InProcessGrid(1)
    context: Context = grid.contexts[grid.nodes[0]]
    context.state[STATE_KEY] = ConfigRecord({secure_aggregation.PROTOCOL_STATE_FIELD: kept})
    msg = Message(RecordDict(), dst_node_id=grid.nodes[0],
                  message_type=wire.message_type(wire.UNMASK))
    msg.metadata.__dict__["_message_id"] = "m1"
    reply = secure_aggregation.unmask(msg, context)
    assert reply.content["status"]["status"] == "failed"
    assert reply.content["status"]["reason"].startswith(
        "the protocol state kept on this node is unreadable")
    assert "key" not in reply.content["status"]["reason"]  # what was kept is not echoed
    assert STATE_KEY not in context.state


def test_a_nan_update_is_never_sent_and_the_others_are_summed_without_it():
    config = default_config()
    outcome = synthetic_outcome(MODEL, 0, 1)
    outcome.update["b"][0] = np.nan

    class Poisoned(InProcessGrid):
        def _deliver(self, action, node, message):
            if action == wire.MASKED_INPUT and node == self.nodes[0]:
                return secure_aggregation.mask_input(message, self.contexts[node], config, outcome)
            return super()._deliver(action, node, message)

    grid = Poisoned(3)
    workflow = SecureWorkflow(config)
    aggregate = workflow.run_round(
        grid, grid.nodes, to_record(MODEL), {**config.to_flower(), "server-round": 1}, 1
    )
    assert aggregate.reports[0].status == "dropped"  # it trained, then left the protocol
    assert "stage 'collect_masked_input'" in aggregate.reports[0].reason
    assert "NaN or infinite" in aggregate.reports[0].reason
    assert len(aggregate.trained) == 2
    assert set(grid.contexts[grid.nodes[0]].state) == set()  # it left the round
    # Its pairwise masks were rebuilt from its neighbours' key shares: the sum of the two.
    assert_sum_of(aggregate, [grid.outcomes[(1, n)] for n in grid.nodes[1:]], workflow)
    assert workflow.describe()["secure_aggregation_rounds"][0]["dropouts"] == {
        "collect_masked_input": ["client-0"]
    }
