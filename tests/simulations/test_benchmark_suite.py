"""The benchmark suite runs end to end and writes every section it ran (tiny sizes; the
figures themselves are measured by `python -m simulations.benchmark`, never here)."""

from __future__ import annotations

import json
import statistics

import pytest

from simulations import bench_ledger, bench_secagg, benchmark


@pytest.mark.slow
def test_suite_writes_each_section_with_machine_and_ratios(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "OUT_DIR", str(tmp_path / "runs"))
    out = tmp_path / "benchmark.json"
    benchmark.main(["--sections", "dpsgd", "scale", "--dpsgd-trials", "1",
                    "--populations", "6", "12", "--per-round", "3", "--scale-rounds", "2",
                    "--json", str(out)])
    document = json.loads(out.read_text())
    assert document["machine"]["cores"] >= 1 and document["machine"]["cpu"]
    assert document["command"].startswith("python -m simulations.benchmark --sections dpsgd scale")
    dpsgd = {(r["method"], r["batch_size"]): r for r in document["sections"]["dpsgd"]["results"]}
    assert {m for m, _ in dpsgd} == {"non-private", "opacus-hooks", "fast"}
    assert all(r["samples_per_second"] > 0 for r in dpsgd.values())
    assert dpsgd[("non-private", 64)]["ratio_to_non_private"] == 1.0
    scale = document["sections"]["scale"]["results"]
    assert [r["clients"] for r in scale] == [6, 12]
    assert all(r["clients_per_round"] == 3 and r["rounds"] == 2 for r in scale)
    assert scale[0]["round_vs_smallest_population"] == 1.0
    assert all(r["peak_rss_mb"] > 0 and r["steady_round_seconds"] > 0 for r in scale)
    for run in scale:  # where the first round went, from Ray's timeline, in order
        startup = run["startup"]
        first_round_ended = run["time_to_first_round"] + run["steady_round_seconds"]
        assert startup["actors"] >= 1
        assert 0 < startup["actors_requested"] < startup["actors_ready"] < startup["app_loaded"]
        assert startup["app_loaded"] < startup["first_replies"] <= first_round_ended + 0.05


@pytest.mark.slow
def test_startup_section_runs_with_its_own_ray_then_on_a_shared_one(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "OUT_DIR", str(tmp_path / "runs"))
    out = tmp_path / "benchmark.json"
    benchmark.main(["--sections", "startup", "--startup-repeat", "1", "--json", str(out)])
    section = json.loads(out.read_text())["sections"]["startup"]
    assert set(section["median_time_to_first_round"]) == {"own Ray", "shared Ray"}
    for name, (run,) in section["results"].items():
        assert run["rounds"] == 4 and run["clients_per_round"] == 10, name
        assert section["median_time_to_first_round"][name] == run["time_to_first_round"] > 0
        startup = run["startup"]  # the shared Ray's earlier runs are not counted
        assert startup["actors"] >= 1
        assert 0 <= startup["actors_requested"] < startup["actors_ready"] < startup["app_loaded"]


@pytest.mark.slow
def test_secure_aggregation_benchmark_runs_pairs_of_both_sides_on_the_chosen_workload(tmp_path):
    out = tmp_path / "secagg.json"
    bench_secagg.main(["--clients", "3", "--rounds", "2", "--set", "partitioning=sampled",
                       "--set", "records-per-client=40", "--repeat", "2", "--json", str(out),
                       "--out", str(tmp_path / "runs")])
    section = json.loads(out.read_text())
    assert section["machine"]["cores"] >= 1
    assert section["overrides"] == {"partitioning": "sampled", "records-per-client": 40}
    (result,) = section["results"]
    assert result["clients"] == 3 and result["rounds"] == 2
    assert result["plain_round_seconds"] > 0 and result["secure_round_seconds"] > 0
    assert result["plain_round_cpu_seconds"] > 0 and result["secure_round_cpu_seconds"] > 0
    assert result["cpu_overhead"] == pytest.approx(statistics.median(result["pair_cpu_overheads"]))
    assert section["repeat"] == 2 and len(result["pair_overheads"]) == 2
    assert result["overhead"] == pytest.approx(statistics.median(result["pair_overheads"]))
    assert 0 < result["secure_stage_seconds"] < result["secure_round_seconds"]
    assert result["protocol_seconds"] > 0 and result["vector_length"] > 0


def test_ledger_benchmark_merges_every_round_and_ships_only_new_entries(tmp_path):
    out = tmp_path / "ledger.json"
    bench_ledger.main(["--clients", "3", "--rounds", "4", "--json", str(out)])
    document = json.loads(out.read_text())
    assert document["machine"]["cores"] >= 1 and document["clients"] == 3
    rounds = document["results"]
    assert [r["server_round"] for r in rounds] == [1, 2, 3, 4]
    assert [r["entries_shipped"] for r in rounds] == [3, 3, 3, 3]  # one new entry a client
    assert all(r["merge_seconds"] > 0 and r["reply_bytes"] > 0 and r["client_ledger_ms"] > 0
               for r in rounds)
