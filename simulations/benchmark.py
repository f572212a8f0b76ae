"""Benchmark federated runs side by side: prints a table and writes JSON.

    python -m simulations.benchmark                          # embedded digits, DP on and off
    python -m simulations.benchmark --data-root ../shared/data   # + PneumoniaMNIST, MNIST

For each configuration it reports the wall time per round (first and steady state), the
share of a round spent in local training, client-rounds per second, the peak resident
memory of the whole process tree (Ray workers included), and the final accuracy and
largest epsilon. Timings belong here, never in timed unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from server.results import RoundRecord
from simulations.memory import PeakRSS
from simulations.run import simulate
from task.config import resolve_config


@dataclass
class BenchmarkResult:
    name: str
    scenario: str
    dp: bool
    clients: int
    rounds: int
    seconds_total: float
    first_round_seconds: float
    steady_round_seconds: float
    local_training_share: float
    client_rounds_per_second: float
    peak_rss_mb: float
    accuracy: float
    epsilon_max: float


def run_one(name: str, overrides: dict, clients: int, parallelism: int) -> BenchmarkResult:
    config = resolve_config(overrides)
    records: list[RoundRecord] = []
    started = time.perf_counter()
    with PeakRSS() as memory:
        summary = simulate(config, clients, on_round=records.append)
    total = time.perf_counter() - started
    steady = [r.seconds for r in records[1:]] or [r.seconds for r in records]
    # Clients train `parallelism` at a time, so a round's local-training capacity is
    # round time x parallelism; the share is the part of it filled with training.
    share = statistics.fmean(
        r.train_seconds / (r.seconds * min(parallelism, max(r.trained, 1))) for r in records[1:] or records
    )
    trained = sum(r.trained for r in records)
    return BenchmarkResult(
        name=name,
        scenario=config.scenario,
        dp=config.dp,
        clients=clients,
        rounds=len(records),
        seconds_total=total,
        first_round_seconds=records[0].seconds,
        steady_round_seconds=statistics.fmean(steady),
        local_training_share=share,
        client_rounds_per_second=trained / sum(r.seconds for r in records),
        peak_rss_mb=memory.peak / 2**20,
        accuracy=summary["accuracy"],
        epsilon_max=summary["epsilon_max"],
    )


def configurations(data_root: str | None, rounds: int | None) -> list[tuple[str, dict, int]]:
    base = {"out-dir": "runs/benchmark"}
    if rounds:
        base["num-server-rounds"] = rounds
    configs = [
        ("digits dp", {**base, "scenario": "digits"}, 4),
        ("digits no-dp", {**base, "scenario": "digits", "dp": False}, 4),
    ]
    if data_root:
        for scenario in ("hospitals", "banks"):
            root = {**base, "scenario": scenario, "data-root": data_root}
            configs += [
                (f"{scenario} dp", root, 10),
                (f"{scenario} no-dp", {**root, "dp": False}, 10),
            ]
    return configs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="folder with the real datasets (../shared/data)")
    parser.add_argument("--rounds", type=int, help="override every scenario's rounds")
    parser.add_argument("--only", help="run only configurations whose name contains this")
    parser.add_argument("--json", default="benchmarks/foundation.json", help="output file")
    args = parser.parse_args(argv)
    parallelism = os.cpu_count() or 1
    results = []
    console = Console()
    for name, overrides, clients in configurations(args.data_root, args.rounds):
        if args.only and args.only not in name:
            continue
        console.print(f"[bold]running {name}[/] ({clients} clients)")
        results.append(run_one(name, overrides, clients, parallelism))
    table = Table(title=f"fedshield benchmark ({parallelism} cores)")
    for column in ("config", "clients", "rounds", "total s", "1st round s", "round s",
                   "training share", "client-rounds/s", "peak RSS MB", "accuracy", "epsilon"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.name, str(r.clients), str(r.rounds), f"{r.seconds_total:.1f}",
                      f"{r.first_round_seconds:.2f}", f"{r.steady_round_seconds:.2f}",
                      f"{r.local_training_share:.0%}", f"{r.client_rounds_per_second:.2f}",
                      f"{r.peak_rss_mb:.0f}", f"{r.accuracy:.4f}",
                      f"{r.epsilon_max:.3f}" if r.dp else "-")
    console.print(table)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cores": parallelism, "platform": platform.platform(),
                    "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [asdict(r) for r in results],
    }, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
