"""Tests of the SecAgg+ protocol core (privacy/secagg), with real cryptography throughout."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from privacy.secagg import (
    MASK_KEY_BYTES,
    EncryptedShare,
    EncryptedShares,
    ForwardedShares,
    MaskedInput,
    NeighbourKeys,
    PublicKeys,
    RoundKeys,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggConfigError,
    SecAggProtocolError,
    SecAggServer,
    SecAggTamperError,
    SetupMessage,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
    build_neighbour_graph,
    default_degree,
    dequantize,
    expand_mask,
    quantization_error_bound,
    quantize,
    run_secagg_round,
)
from privacy.secagg.keys import new_private_key, private_key_from_bytes, public_key_bytes
from privacy.secagg.masking import pairwise_mask_key, self_mask_key
from privacy.secagg.shamir import PRIME, reconstruct_secret, share_x, split_secret

MODEL_SIZE = 62_006  # parameters of the project's CNN


class DeterministicRng:
    """A reproducible byte stream (ChaCha20 keyed by SHA-256 of a label) for tests only."""

    def __init__(self, label: str) -> None:
        key = hashlib.sha256(label.encode()).digest()
        self._encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def __call__(self, n: int) -> bytes:
        return self._encryptor.update(bytes(n))


def make_updates(n: int, length: int, seed: int = 0) -> dict[int, np.ndarray]:
    """Float updates of typical magnitude 1e-2..1 with random signs."""
    gen = np.random.default_rng(seed)
    return {
        100 + i: gen.choice([-1.0, 1.0], length) * 10 ** gen.uniform(-2, 0, length)
        for i in range(n)
    }


def key_material(public_keys: dict[int, PublicKeys]) -> dict[int, tuple[bytes, bytes]]:
    return {u: (m.share_public_key, m.mask_public_key) for u, m in public_keys.items()}


def plain_sum(vectors: dict[int, np.ndarray], ids: list[int]) -> np.ndarray:
    return np.sum([vectors[i] for i in ids], axis=0)


def drive_round(
    vectors: dict[int, np.ndarray],
    config: SecAggConfig | None = None,
    *,
    rng: Callable[[int], bytes],
    run_id: str = "test-run",
    round_id: int = 1,
    tamper: Callable[[dict[int, ForwardedShares]], dict[int, ForwardedShares]] | None = None,
    stop_before_unmask: bool = False,
) -> dict[str, Any]:
    """Run the stages by hand (as the Flower glue will) and keep every message."""
    ids = sorted(vectors)
    length = len(next(iter(vectors.values())))
    server = SecAggServer(ids, length, config, run_id=run_id, round_id=round_id, rng=rng)
    clients = {u: SecAggClient(u, rng=rng) for u in ids}
    t: dict[str, Any] = {"server": server, "clients": clients}
    t["setup"] = server.setup()
    t["public_keys"] = {u: clients[u].share_keys(t["setup"]) for u in ids}
    t["neighbour_keys"] = server.collect_public_keys(t["public_keys"].values())
    t["shares"] = {u: clients[u].share_secrets(m) for u, m in t["neighbour_keys"].items()}
    forwarded = server.collect_encrypted_shares(t["shares"].values())
    t["forwarded"] = tamper(forwarded) if tamper else forwarded
    t["masked"] = {u: clients[u].mask_input(m, vectors[u]) for u, m in t["forwarded"].items()}
    t["requests"] = server.collect_masked_inputs(t["masked"].values())
    if stop_before_unmask:
        return t
    t["responses"] = {u: clients[u].unmask(m) for u, m in t["requests"].items()}
    t["result"] = server.collect_unmask_responses(t["responses"].values())
    return t


# --------------------------------------------------------------------- full protocol
def test_full_round_n10_t6_matches_float_sum_within_bound() -> None:
    vectors = make_updates(10, MODEL_SIZE)
    config = SecAggConfig(threshold=6)
    result = run_secagg_round(vectors, config, rng=DeterministicRng("full"))
    ids = sorted(vectors)
    expected = plain_sum(vectors, ids)

    assert result.contributors == ids
    bound = quantization_error_bound(10, config.clip_range, config.quant_bits)
    assert np.max(np.abs(result.aggregate - expected)) <= bound
    relative = np.linalg.norm(result.aggregate - expected) / np.linalg.norm(expected)
    assert relative < 1e-4
    np.testing.assert_allclose(result.aggregate, expected, rtol=1e-4, atol=bound)


def test_a_32_bit_ring_sums_in_uint32_words_and_refuses_any_other_word() -> None:
    vectors = make_updates(10, 3_000, seed=21)
    config = SecAggConfig(threshold=6, quant_bits=28, modulus_bits=32, clip_range=1.0)
    t = drive_round(vectors, config, rng=DeterministicRng("ring32"))
    assert {m.masked_vector.dtype for m in t["masked"].values()} == {np.dtype(np.uint32)}
    bound = quantization_error_bound(10, 1.0, 28)
    assert np.max(np.abs(t["result"].aggregate - plain_sum(vectors, sorted(vectors)))) <= bound

    t = drive_round(vectors, config, rng=DeterministicRng("ring32-wide"), stop_before_unmask=True)
    server = SecAggServer(sorted(vectors), 3_000, config, run_id="test-run", round_id=1,
                          rng=DeterministicRng("ring32-wide"))
    server.setup()
    server.collect_public_keys(t["public_keys"].values())
    server.collect_encrypted_shares(t["shares"].values())
    widened = [replace(m, masked_vector=m.masked_vector.astype(np.uint64))
               for m in t["masked"].values()]
    with pytest.raises(SecAggProtocolError, match="must be a uint32 array"):
        server.collect_masked_inputs(widened)


def test_default_threshold_for_ten_clients_is_six() -> None:
    server = SecAggServer(range(10), 4, run_id="r", round_id=0)
    assert server.degree == 9 and server.threshold == 6


def test_stochastic_rounding_within_documented_bound() -> None:
    vectors = make_updates(10, 5_000, seed=1)
    config = SecAggConfig(rounding="stochastic", quant_bits=20, modulus_bits=32, clip_range=1.0)
    result = run_secagg_round(vectors, config, rng=DeterministicRng("stochastic"))
    expected = plain_sum(vectors, sorted(vectors))
    bound = quantization_error_bound(10, 1.0, 20, "stochastic")
    error = result.aggregate - expected
    assert np.max(np.abs(error)) <= bound
    # Unbiased: the mean error is far below the per-coordinate bound.
    assert abs(error.mean()) < bound / 20


def test_small_modulus_wraps_and_decodes_signed_sums() -> None:
    vectors = {u: np.full(1_000, -0.9 if u % 2 else 0.8) for u in range(8)}
    config = SecAggConfig(clip_range=1.0, quant_bits=16, modulus_bits=19)  # 16 + log2(8)
    result = run_secagg_round(vectors, config, rng=DeterministicRng("wrap"))
    expected = plain_sum(vectors, list(range(8)))
    assert np.max(np.abs(result.aggregate - expected)) <= quantization_error_bound(8, 1.0, 16)


# --------------------------------------------------------------------- privacy of inputs
def test_masked_vector_is_uncorrelated_with_update() -> None:
    vectors = make_updates(3, 100_000, seed=2)
    t = drive_round(vectors, rng=DeterministicRng("correlation"), stop_before_unmask=True)
    for u, msg in t["masked"].items():
        masked = msg.masked_vector.astype(np.float64)
        assert abs(np.corrcoef(masked, vectors[u])[0, 1]) < 0.01
        # Masked words look uniform over Z_{2^64}: mean ~ 2^63, about 8 per cent per octile.
        assert abs(masked.mean() / 2.0**64 - 0.5) < 0.01
        counts = np.bincount((msg.masked_vector >> np.uint64(61)).astype(np.int64), minlength=8)
        assert np.all(np.abs(counts / counts.sum() - 1 / 8) < 0.01)


def test_server_sees_only_masked_inputs_and_the_sum() -> None:
    vectors = make_updates(4, 1_000, seed=3)
    t = drive_round(vectors, rng=DeterministicRng("only-sum"))
    for u, msg in t["masked"].items():
        quantised = quantize(vectors[u], clip_range=8.0, quant_bits=32, modulus_bits=64)
        assert not np.any(msg.masked_vector == quantised)  # no coordinate leaks in the clear


# --------------------------------------------------------------------- dropouts
@pytest.mark.parametrize("stage", [Stage.SHARE_SECRETS, Stage.COLLECT_MASKED_INPUT, Stage.UNMASK])
@pytest.mark.parametrize("num_dropped", [1, 2, 3, 4])
def test_dropouts_still_sum_survivors(stage: str, num_dropped: int) -> None:
    vectors = make_updates(10, 3_000, seed=num_dropped)
    ids = sorted(vectors)
    dropped = set(ids[1 : 1 + 2 * num_dropped : 2])
    result = run_secagg_round(
        vectors,
        SecAggConfig(threshold=6),
        {stage: dropped},
        rng=DeterministicRng(f"drop-{stage}-{num_dropped}"),
    )
    # A client that dropped after sending its masked input is still in the sum.
    expected_contributors = ids if stage == Stage.UNMASK else sorted(set(ids) - dropped)
    assert result.contributors == expected_contributors
    expected = plain_sum(vectors, expected_contributors)
    bound = quantization_error_bound(len(expected_contributors), 8.0, 32)
    assert np.max(np.abs(result.aggregate - expected)) <= bound


def test_dropouts_spread_over_every_stage() -> None:
    vectors = make_updates(10, 3_000, seed=9)
    drop_at = {
        Stage.SHARE_KEYS: {100},
        Stage.SHARE_SECRETS: {101},
        Stage.COLLECT_MASKED_INPUT: {102},
        Stage.UNMASK: {103},
    }
    result = run_secagg_round(vectors, SecAggConfig(), drop_at, rng=DeterministicRng("spread"))
    contributors = [u for u in sorted(vectors) if u not in (100, 101, 102)]
    assert result.contributors == contributors
    assert result.survivors[Stage.UNMASK] == [u for u in contributors if u != 103]
    expected = plain_sum(vectors, contributors)
    assert np.max(np.abs(result.aggregate - expected)) <= quantization_error_bound(7, 8.0, 32)


@pytest.mark.parametrize("stage", list(Stage.ALL[1:]))
def test_five_dropouts_abort_with_clear_error(stage: str) -> None:
    vectors = make_updates(10, 500, seed=5)
    dropped = set(sorted(vectors)[:5])
    with pytest.raises(SecAggAbort) as info:
        run_secagg_round(
            vectors,
            SecAggConfig(threshold=6),
            {stage: dropped},
            rng=DeterministicRng(f"abort-{stage}"),
        )
    err = info.value
    assert (err.stage, err.survivors, err.threshold) == (stage, 5, 6)
    assert f"'{stage}'" in str(err) and "5 surviving" in str(err) and "t=6" in str(err)


# --------------------------------------------------------------------- tampering
def _first_share(forwarded: dict[int, ForwardedShares]) -> tuple[int, EncryptedShare]:
    recipient = min(forwarded)
    return recipient, forwarded[recipient].shares[0]


def _replace_share(
    forwarded: dict[int, ForwardedShares], recipient: int, new: EncryptedShare
) -> dict[int, ForwardedShares]:
    msg = forwarded[recipient]
    shares = [new if s.sender == new.sender else s for s in msg.shares]
    return {**forwarded, recipient: replace(msg, shares=shares)}


@pytest.mark.parametrize("field", ["ciphertext_start", "tag", "nonce"])
def test_bit_flip_is_rejected_naming_sender(field: str) -> None:
    vectors = make_updates(5, 100, seed=6)
    seen: dict[str, int] = {}

    def flip(forwarded: dict[int, ForwardedShares]) -> dict[int, ForwardedShares]:
        recipient, share = _first_share(forwarded)
        seen["sender"] = share.sender
        if field == "nonce":
            nonce = bytes([share.nonce[0] ^ 0x01]) + share.nonce[1:]
            return _replace_share(forwarded, recipient, replace(share, nonce=nonce))
        ct = bytearray(share.ciphertext)
        ct[0 if field == "ciphertext_start" else -1] ^= 0x80
        return _replace_share(forwarded, recipient, replace(share, ciphertext=bytes(ct)))

    with pytest.raises(SecAggTamperError) as info:
        drive_round(vectors, rng=DeterministicRng("flip"), tamper=flip)
    assert info.value.sender == seen["sender"]
    assert f"client {seen['sender']}" in str(info.value)


@pytest.mark.parametrize("other", [("test-run", 2), ("other-run", 1)])
def test_replay_from_another_round_or_run_is_rejected(other: tuple[str, int]) -> None:
    vectors = make_updates(5, 100, seed=7)
    # Identical rng streams: every key pair and nonce is the same in both executions, so
    # only the binding of run and round into HKDF and the AD can tell the ciphertexts apart.
    old = drive_round(
        vectors,
        rng=DeterministicRng("replay"),
        run_id=other[0],
        round_id=other[1],
        stop_before_unmask=True,
    )
    seen: dict[str, int] = {}

    def replay(forwarded: dict[int, ForwardedShares]) -> dict[int, ForwardedShares]:
        recipient, share = _first_share(forwarded)
        stale = next(s for s in old["forwarded"][recipient].shares if s.sender == share.sender)
        assert stale.nonce == share.nonce and stale.ciphertext != share.ciphertext
        seen["sender"] = share.sender
        return _replace_share(forwarded, recipient, stale)

    with pytest.raises(SecAggTamperError) as info:
        drive_round(
            vectors, rng=DeterministicRng("replay"), run_id="test-run", round_id=1, tamper=replay
        )
    new_keys = drive_round(vectors, rng=DeterministicRng("replay"), stop_before_unmask=True)[
        "public_keys"
    ]
    assert key_material(new_keys) == key_material(old["public_keys"])  # same keys in both
    assert info.value.sender == seen["sender"]


@pytest.mark.parametrize("rewrite_header", [False, True])
def test_share_for_another_client_is_rejected(rewrite_header: bool) -> None:
    vectors = make_updates(5, 100, seed=8)
    seen: dict[str, int] = {}

    def misroute(forwarded: dict[int, ForwardedShares]) -> dict[int, ForwardedShares]:
        victim, intended = sorted(forwarded)[:2]
        # A ciphertext that a third client addressed to `intended`, handed to `victim`.
        share = next(s for s in forwarded[intended].shares if s.sender != victim)
        seen["sender"] = share.sender
        if rewrite_header:
            share = replace(share, recipient=victim)
        return _replace_share(forwarded, victim, share)

    with pytest.raises(SecAggTamperError) as info:
        drive_round(vectors, rng=DeterministicRng("misroute"), tamper=misroute)
    assert info.value.sender == seen["sender"]
    assert f"client {seen['sender']}" in str(info.value)


# --------------------------------------------------------------------- mask keys
def test_pair_masks_differ_across_rounds_and_runs() -> None:
    a, b = (private_key_from_bytes(new_private_key()) for _ in range(2))
    pk_a, pk_b = public_key_bytes(a), public_key_bytes(b)

    def key(private, peer_pk, me, peer, run, rnd):
        return pairwise_mask_key(
            private, peer_pk, run_id=run, round_id=rnd, client_id=me, peer_id=peer
        )

    k = key(a, pk_b, 1, 2, "run-1", 1)
    assert len(k) == MASK_KEY_BYTES and 8 * len(k) >= 128
    assert k == key(b, pk_a, 2, 1, "run-1", 1)  # both ends agree
    variants = {k, key(a, pk_b, 1, 2, "run-1", 2), key(a, pk_b, 1, 2, "run-2", 1)}
    assert len(variants) == 3
    masks = [expand_mask(v, 1_000, 64) for v in variants]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])
    seeds = {
        self_mask_key(bytes(32), run_id=r, round_id=n, client_id=1)
        for r, n in [("x", 1), ("x", 2), ("y", 1)]
    }
    assert len(seeds) == 3


def test_masked_inputs_differ_across_rounds_even_with_identical_keys() -> None:
    vectors = make_updates(4, 500, seed=10)
    first = drive_round(
        vectors, rng=DeterministicRng("rounds"), round_id=1, stop_before_unmask=True
    )
    second = drive_round(
        vectors, rng=DeterministicRng("rounds"), round_id=2, stop_before_unmask=True
    )
    assert key_material(first["public_keys"]) == key_material(second["public_keys"])
    for u in vectors:
        a, b = first["masked"][u].masked_vector, second["masked"][u].masked_vector
        assert np.mean(a == b) < 0.01


@pytest.mark.parametrize("bits, word", [(20, np.uint32), (32, np.uint32), (40, np.uint64),
                                        (64, np.uint64)])
def test_expand_mask_is_uniform_below_the_modulus_in_the_rings_word(bits, word) -> None:
    mask = expand_mask(bytes(range(32)), 200_000, bits)
    assert mask.dtype == word and int(mask.max()) < 2**bits
    assert abs(float(mask.mean()) / 2**bits - 0.5) < 0.005
    top = (mask >> word(bits - 3)).astype(np.int64)  # the three highest bits: all 8 values
    assert np.all(np.abs(np.bincount(top, minlength=8) / mask.size - 1 / 8) < 0.005)
    with pytest.raises(SecAggConfigError):
        expand_mask(bytes(16), 10, 64)  # 128-bit keys are refused: masks use 256 bits


# --------------------------------------------------------------------- neighbour graph
def test_large_cohort_uses_sparse_regular_graph_and_sums_correctly() -> None:
    vectors = make_updates(100, 20_000, seed=11)
    ids = sorted(vectors)
    rng = DeterministicRng("large")
    server = SecAggServer(ids, 20_000, run_id="big", round_id=3, rng=rng)
    k = server.degree
    assert k == default_degree(100) == math.ceil(math.log2(100))
    graph = server.neighbours
    assert all(len(vs) == k for vs in graph.values())
    assert all(u in graph[v] for u, vs in graph.items() for v in vs)  # symmetric
    assert server.threshold == (k + 1) // 2 + 1

    drop_at = {
        Stage.SHARE_SECRETS: {105},
        Stage.COLLECT_MASKED_INPUT: {150, 151},
        Stage.UNMASK: {190},
    }
    result = run_secagg_round(vectors, SecAggConfig(), drop_at, run_id="big", round_id=3, rng=rng)
    contributors = [u for u in ids if u not in (105, 150, 151)]
    assert result.contributors == contributors
    expected = plain_sum(vectors, contributors)
    assert np.max(np.abs(result.aggregate - expected)) <= quantization_error_bound(97, 8.0, 32)


def test_graph_is_derived_from_public_seed_by_every_party() -> None:
    vectors = make_updates(40, 10, seed=12)
    t = drive_round(vectors, rng=DeterministicRng("graph"), stop_before_unmask=True)
    server = t["server"]
    for u, client in t["clients"].items():
        assert client.neighbours == server.neighbours[u]
    setup: SetupMessage = t["setup"]
    args = (setup.client_ids, setup.degree)
    same = build_neighbour_graph(
        *args, setup.graph_seed, run_id=setup.run_id, round_id=setup.round_id
    )
    other = build_neighbour_graph(*args, bytes(32), run_id=setup.run_id, round_id=setup.round_id)
    assert same == server.neighbours and other != same


@pytest.mark.parametrize("n", [2, 3, 20, 21, 33, 64, 101, 1000])
def test_default_graph_is_regular_for_every_cohort_size(n: int) -> None:
    k = default_degree(n)
    if n <= 20:
        assert k == n - 1
    else:
        assert k in (math.ceil(math.log2(n)), math.ceil(math.log2(n)) + 1)
        assert (n * k) % 2 == 0
    graph = build_neighbour_graph(range(n), k, bytes(32), run_id="g", round_id=0)
    assert all(len(vs) == k and u not in vs for u, vs in graph.items())
    assert all(u in graph[v] for u, vs in graph.items() for v in vs)


# --------------------------------------------------------------------- never both shares
def test_client_never_reveals_both_shares_of_a_peer() -> None:
    vectors = make_updates(10, 500, seed=13)
    ids = sorted(vectors)
    t = drive_round(vectors, rng=DeterministicRng("both"), stop_before_unmask=True)
    client = t["clients"][ids[0]]
    request: UnmaskRequest = t["requests"][ids[0]]
    greedy = replace(request, dropped=[ids[1]])  # ids[1] is also listed as survivor
    with pytest.raises(SecAggProtocolError, match="both"):
        client.unmask(greedy)
    response = client.unmask(request)
    with pytest.raises(SecAggProtocolError):  # a second request is refused outright
        client.unmask(replace(request, survivors=[ids[0]], dropped=[ids[1]]))
    assert response.seed_share_owners == ids and response.key_share_owners == []


def test_reveal_history_survives_state_restore() -> None:
    vectors = make_updates(10, 200, seed=14)
    ids = sorted(vectors)
    t = drive_round(vectors, rng=DeterministicRng("history"), stop_before_unmask=True)
    client = t["clients"][ids[0]]
    snapshot = client.state_dict()
    client.unmask(t["requests"][ids[0]])
    # Roll the client back to before unmask but keep what it revealed: it must refuse to
    # now reveal mask-key shares of the same peers.
    state = {**snapshot, "revealed_seed": ids}
    restored = SecAggClient.from_state_dict(state)
    with pytest.raises(SecAggProtocolError, match="both"):
        restored.unmask(replace(t["requests"][ids[0]], survivors=[ids[0]], dropped=ids[1:]))


def test_unmask_responses_never_hold_both_shares_with_dropouts() -> None:
    vectors = make_updates(10, 500, seed=15)
    ids = sorted(vectors)
    rng = DeterministicRng("both-global")
    server = SecAggServer(ids, 500, run_id="r", round_id=1, rng=rng)
    clients = {u: SecAggClient(u, rng=rng) for u in ids}
    setup = server.setup()
    keys = server.collect_public_keys([clients[u].share_keys(setup) for u in ids])
    fwd = server.collect_encrypted_shares([clients[u].share_secrets(keys[u]) for u in ids])
    alive = [u for u in ids if u not in (ids[2], ids[5])]  # two drop before masking
    req = server.collect_masked_inputs([clients[u].mask_input(fwd[u], vectors[u]) for u in alive])
    responses = [clients[u].unmask(req[u]) for u in alive]
    seed_owners = {o for r in responses for o in r.seed_share_owners}
    key_owners = {o for r in responses for o in r.key_share_owners}
    assert seed_owners == set(alive) and key_owners == {ids[2], ids[5]}
    assert not seed_owners & key_owners
    for r in responses:
        assert not set(r.seed_share_owners) & set(r.key_share_owners)
    # The server refuses a response that carries both kinds for one owner.
    bad = replace(responses[0], key_share_owners=[ids[0]], key_shares=[responses[0].seed_shares[0]])
    with pytest.raises(SecAggProtocolError, match="both"):
        server.collect_unmask_responses([bad, *responses[1:]])


# --------------------------------------------------------------------- building blocks
def test_shamir_any_t_shares_reconstruct_and_fewer_do_not() -> None:
    rng = DeterministicRng("shamir")
    secret = rng(32)
    ids = [3, 7, 11, 2**64 - 1, 0]
    xs = [share_x(i) for i in ids]
    ys = split_secret(secret, xs, 3, rng)
    points = list(zip(xs, ys, strict=True))
    for subset in ([0, 1, 2], [1, 3, 4], [0, 2, 4], [0, 1, 2, 3, 4]):
        assert reconstruct_secret([points[i] for i in subset], 3) == secret
    with pytest.raises(SecAggProtocolError):
        reconstruct_secret(points[:2], 3)
    assert all(0 <= y < PRIME for y in ys)
    # Two shares interpolated as if t = 2 give a field element, not the 32-byte secret.
    with pytest.raises(SecAggProtocolError, match="inconsistent"):
        reconstruct_secret(points[:2], 2)


def test_quantize_dequantize_error_and_clipping() -> None:
    x = np.array([-20.0, -8.0, -1e-3, 0.0, 1e-3, 3.14159, 8.0, 20.0])
    q = quantize(x, clip_range=8.0, quant_bits=32, modulus_bits=64)
    back = dequantize(q, clip_range=8.0, quant_bits=32, modulus_bits=64)
    expected = np.clip(x, -8.0, 8.0)
    assert np.max(np.abs(back - expected)) <= quantization_error_bound(1, 8.0, 32)
    with pytest.raises(SecAggConfigError):
        quantize(np.array([np.nan]), clip_range=1.0, quant_bits=16, modulus_bits=32)


def test_modulus_too_small_for_cohort_is_refused() -> None:
    with pytest.raises(SecAggConfigError, match="modulus_bits"):
        SecAggServer(
            range(10), 10, SecAggConfig(quant_bits=32, modulus_bits=35), run_id="r", round_id=0
        )
    SecAggServer(range(8), 10, SecAggConfig(quant_bits=32, modulus_bits=35), run_id="r", round_id=0)


@pytest.mark.parametrize(
    "config, key",
    [
        (SecAggConfig(threshold=5), "threshold"),  # not a majority of 10
        (SecAggConfig(threshold=11), "threshold"),
        (SecAggConfig(degree=3, full_graph_max_clients=2), "degree"),  # 3 * 11 is odd
        (SecAggConfig(clip_range=0.0), "clip_range"),
        (SecAggConfig(quant_bits=60), "quant_bits"),
        (SecAggConfig(rounding="nearest"), "rounding"),
    ],
)
def test_config_errors_name_the_key(config: SecAggConfig, key: str) -> None:
    n = 11 if key == "degree" else 10
    with pytest.raises(SecAggConfigError, match=key):
        SecAggServer(range(n), 10, config, run_id="r", round_id=0)


# --------------------------------------------------------------------- messages and state
def test_every_message_round_trips_through_plain_dicts() -> None:
    vectors = make_updates(5, 50, seed=16)
    t = drive_round(vectors, rng=DeterministicRng("dicts"))
    plain = (bytes, int, float, str, np.ndarray)
    pairs = [(SetupMessage, [t["setup"]])]
    pairs += [
        (PublicKeys, t["public_keys"].values()),
        (NeighbourKeys, t["neighbour_keys"].values()),
    ]
    pairs += [(EncryptedShares, t["shares"].values()), (ForwardedShares, t["forwarded"].values())]
    pairs += [(MaskedInput, t["masked"].values()), (UnmaskRequest, t["requests"].values())]
    pairs += [(UnmaskResponse, t["responses"].values())]
    for cls, messages in pairs:
        for msg in messages:
            data = msg.to_dict()
            for value in data.values():
                assert isinstance(value, plain) or (
                    isinstance(value, list) and all(isinstance(v, plain) for v in value)
                )
            again = cls.from_dict(data)
            if cls is MaskedInput:
                assert np.array_equal(again.masked_vector, msg.masked_vector)
            else:
                assert again == msg
    with pytest.raises(SecAggProtocolError):
        PublicKeys.from_dict({**t["public_keys"][100].to_dict(), "extra": 1})
    with pytest.raises(SecAggProtocolError):
        PublicKeys.from_dict({**t["public_keys"][100].to_dict(), "client_id": "100"})


def test_clients_can_be_persisted_between_stages() -> None:
    vectors = make_updates(6, 300, seed=17)
    ids = sorted(vectors)
    rng = DeterministicRng("persist")
    server = SecAggServer(ids, 300, run_id="p", round_id=4, rng=rng)
    states = {u: SecAggClient(u, rng=rng).state_dict() for u in ids}

    def step(u: int, stage: str, message: Any) -> Any:
        """Restore client u from its stored state, run one stage, store the state again."""
        client = SecAggClient.from_state_dict(states[u], rng=rng)
        if stage == Stage.COLLECT_MASKED_INPUT:
            out = client.mask_input(message, vectors[u])
        else:
            out = getattr(client, stage)(message)
        states[u] = client.state_dict()
        return out

    setup = server.setup()
    keys = server.collect_public_keys([step(u, "share_keys", setup) for u in ids])
    fwd = server.collect_encrypted_shares([step(u, "share_secrets", keys[u]) for u in ids])
    alive = ids[:-1]
    req = server.collect_masked_inputs([step(u, Stage.COLLECT_MASKED_INPUT, fwd[u]) for u in alive])
    result = server.collect_unmask_responses([step(u, "unmask", req[u]) for u in alive])
    expected = plain_sum(vectors, ids[:-1])
    assert np.max(np.abs(result.aggregate - expected)) <= quantization_error_bound(5, 8.0, 32)


def test_keys_made_ahead_are_the_ones_published_and_used() -> None:
    keys = RoundKeys.fresh(DeterministicRng("ahead"))
    for private, public in ((keys.share_private, keys.share_public),
                            (keys.mask_private, keys.mask_public)):
        assert public == public_key_bytes(private_key_from_bytes(private))
    setup = SecAggServer([1, 2, 3], 10, run_id="k", round_id=1).setup()
    client = SecAggClient(2)
    published = client.share_keys(setup, keys)
    assert (published.share_public_key, published.mask_public_key) == (
        keys.share_public, keys.mask_public)
    state = client.state_dict()
    assert (state["share_private_key"], state["mask_private_key"]) == (
        keys.share_private, keys.mask_private)


def test_stages_out_of_order_are_refused() -> None:
    client = SecAggClient(1)
    with pytest.raises(SecAggProtocolError, match="out of order"):
        client.unmask(UnmaskRequest("r", 0, 1, [1], []))
    server = SecAggServer(range(3), 10, run_id="r", round_id=0)
    with pytest.raises(SecAggProtocolError, match="out of order"):
        server.collect_masked_inputs([])


def test_messages_from_another_round_are_refused() -> None:
    vectors = make_updates(3, 20, seed=18)
    rng = DeterministicRng("stale")
    server = SecAggServer(sorted(vectors), 20, run_id="r", round_id=5, rng=rng)
    client = SecAggClient(100, rng=rng)
    keys = client.share_keys(server.setup())
    with pytest.raises(SecAggProtocolError, match="another run or round"):
        server.collect_public_keys([replace(keys, round_id=4)])
