"""The Message-round benchmark runs real simulations and reports every payload (tiny
sizes; its figures are measured by `python -m simulations.bench_messages`, never here)."""

from __future__ import annotations

import json

import pytest

from simulations import bench_messages


@pytest.mark.slow
def test_message_rounds_are_timed_for_each_payload(tmp_path):
    out = tmp_path / "messages.json"
    bench_messages.main(["--clients", "3", "--rounds", "1", "--json", str(out)])
    document = json.loads(out.read_text())
    results = document["results"]
    assert [r["payload_bytes"] for r in results] == list(bench_messages.PAYLOADS)
    assert all(r["clients"] == 3 and r["round_seconds"] > 0 for r in results)
    assert all(r["per_message_ms"] == pytest.approx(1000 * r["round_seconds"] / 3) for r in results)
    assert document["machine"]["cores"] >= 1
