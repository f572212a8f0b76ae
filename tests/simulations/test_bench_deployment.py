"""The deployment benchmark starts a real federation of processes and runs plain and secure
rounds on it (two clients, two rounds; its figures are measured by
`python -m simulations.bench_deployment`, never here)."""

from __future__ import annotations

import json

import pytest

from simulations import bench_deployment


@pytest.mark.slow
def test_deployed_rounds_are_timed_and_a_steady_secure_round_is_two_message_rounds(tmp_path):
    out = tmp_path / "deployment.json"
    bench_deployment.main(["--clients", "2", "--rounds", "2", "--json", str(out)])
    document = json.loads(out.read_text())
    (pair,) = document["pairs"]
    assert len(pair["plain"]["round_seconds"]) == len(pair["secure"]["round_seconds"]) == 2
    assert pair["plain"]["stage_seconds"] == []
    first, second = pair["secure"]["stage_seconds"]
    assert set(first) == {"share_keys", "share_secrets", "collect_masked_input", "unmask"}
    # Round 2 started from the keys published in round 1, its share secrets inside round
    # 1's unmask messages: two Message rounds of its own.
    assert set(second) == {"collect_masked_input", "unmask"}
    assert document["secure_round_seconds"][0] == pytest.approx(pair["secure"]["round_seconds"][1])
    assert document["machine"]["cores"] >= 1
