"""The benchmark suite: every performance figure of BENCHMARKS.md in one invocation.

    python -m simulations.benchmark                              # every section
    python -m simulations.benchmark --sections rounds scale      # some of them
    python -m simulations.benchmark --data-root ../shared/data   # + hospitals and banks rows

Each section runs its configurations side by side and reports ratios as well as times:

``dpsgd``
    local DP-SGD throughput of the seed's CNN on 3x32x32 inputs against non-private SGD
    (:mod:`simulations.bench_dpsgd`: Opacus' default hooks and the fast engine, one torch
    thread per client process, as in a simulation).
``rounds``
    federated runs (DP on and off): time to the first round (what the first round costs
    beyond a steady one: Ray, the actors' imports, first-use costs), the steady round
    time against the clients' local training inside it (training time divided among the
    parallel client actors), client-rounds per second, peak RSS of the process tree,
    accuracy and epsilon. The digits split gives each of 10 clients 144 records; two rows
    give each 600 (partitioning ``sampled``), as many as MNIST split among 100 clients,
    with secure aggregation (the default, as every other row) and without it.
    A second table splits each run's first round into phases read from Ray's timeline
    (:mod:`simulations.startup`): Ray's start, the actors' processes, their imports, their
    first reply.
``startup``
    time to the first round of the same run (10 digits clients, DP, secure aggregation),
    ``--startup-repeat`` (3) times with Ray started by the run, then as often on one Ray
    started once beforehand and shared by the runs (:func:`simulations.cluster.shared_ray`,
    as a sweep does); medians, and each run's phases.
``secagg``
    round time with and without secure aggregation at 10, 50 and 100 clients, same data
    and clients (:mod:`simulations.bench_secagg`), then again at 100 clients with
    ``--secagg-work-records`` (600) records each; each cohort as ``--secagg-repeat`` (7)
    pairs of runs (``--secagg-work-repeat`` (3) at 600 records, whose overhead is far from
    any threshold), every other pair secure side first, whose medians are reported: one
    pair's overhead moves by 10-20 points.
``scale``
    populations of 100 and 10,000 virtual clients with 100 of them per round, each client
    with the same ``records-per-client`` (partitioning ``sampled``), so the per-round work
    is the same: steady round time against the smallest population, and peak RSS.

Results go to ``benchmarks/benchmark.json`` with the machine (cores, versions, load);
timings are wall clock, so read them with the load average beside them. They belong
here, never in timed unit tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console

from server.results import RoundRecord
from simulations.bench_report import print_table, write_json
from simulations.memory import PeakRSS
from simulations.startup import STARTUP_COLUMNS, StartupPhases, startup_phases, startup_row
from task.config import resolve_config

SECTIONS = ("dpsgd", "rounds", "startup", "secagg", "scale")
OUT_DIR = "runs/benchmark"


@dataclass
class RunMeasurement:
    """One federated run, as the ``rounds`` and ``scale`` sections report it."""

    name: str
    scenario: str
    dp: bool
    secure_aggregation: bool
    clients: int
    clients_per_round: int
    rounds: int
    seconds_total: float
    time_to_first_round: float
    first_round_seconds: float
    steady_round_seconds: float
    local_training_seconds: float
    round_to_training: float
    client_rounds_per_second: float
    peak_rss_mb: float
    accuracy: float
    epsilon_max: float
    startup: StartupPhases


def measure_run(name: str, overrides: dict, clients: int, parallelism: int) -> RunMeasurement:
    """Run one simulation (Ray started inside, as ``simulate`` does) and measure it."""
    import ray

    from simulations.run import simulate

    config = resolve_config({"out-dir": OUT_DIR, **overrides})
    records: list[RoundRecord] = []
    ended: list[float] = []
    timeline: list[dict] = []

    def on_round(record: RoundRecord) -> None:
        ended.append(time.perf_counter())
        records.append(record)
        if len(records) == 1:  # while Ray runs: it stops with the simulation
            timeline.extend(ray.timeline())

    started_at = time.time()
    started = time.perf_counter()
    with PeakRSS() as memory:
        summary = simulate(config, clients, on_round=on_round)
    total = time.perf_counter() - started
    steady_records = records[1:] or records
    steady = statistics.fmean(r.seconds for r in steady_records)
    # The clients of a round train `parallelism` at a time (one actor per core).
    training = statistics.fmean(
        r.train_seconds / min(parallelism, max(r.trained, 1)) for r in steady_records
    )
    return RunMeasurement(
        name=name,
        scenario=config.scenario,
        dp=config.dp,
        secure_aggregation=config.secure_aggregation,
        clients=clients,
        clients_per_round=max(r.trained for r in records),
        rounds=len(records),
        seconds_total=total,
        time_to_first_round=(ended[0] - started) - steady,
        first_round_seconds=records[0].seconds,
        steady_round_seconds=steady,
        local_training_seconds=training,
        round_to_training=steady / training if training else float("inf"),
        client_rounds_per_second=sum(r.trained for r in records) / total,
        peak_rss_mb=memory.peak / 2**20,
        accuracy=summary["accuracy"],
        epsilon_max=summary["epsilon_max"],
        startup=startup_phases(timeline, started_at),
    )


def _run_rows(runs: list[RunMeasurement]) -> list[list[str]]:
    return [[r.name, f"{r.clients:,}", str(r.clients_per_round), str(r.rounds),
             f"{r.time_to_first_round:.1f}", f"{r.steady_round_seconds:.2f}",
             f"{r.local_training_seconds:.2f}", f"{r.round_to_training:.2f}x",
             f"{r.client_rounds_per_second:.2f}", f"{r.peak_rss_mb:,.0f}",
             f"{r.accuracy:.3f}", f"{r.epsilon_max:.3f}" if r.dp else "-"] for r in runs]


def _startup_rows(runs: list[RunMeasurement]) -> list[list[str]]:
    # The first round ended one steady round after the time to the first round.
    return [[r.name, *startup_row(r.startup, r.time_to_first_round + r.steady_round_seconds,
                                  r.steady_round_seconds)] for r in runs]


RUN_COLUMNS = ("run", "clients", "per round", "rounds", "to 1st round s", "round s",
               "training s", "round / training", "client-rounds/s", "peak RSS MB",
               "accuracy", "epsilon")


def section_rounds(args: argparse.Namespace, console: Console, parallelism: int) -> dict:
    configs: list[tuple[str, dict, int]] = [
        ("digits dp", {"scenario": "digits"}, 4),
        ("digits no-dp", {"scenario": "digits", "dp": False}, 4),
        ("digits dp, 10 clients", {"scenario": "digits"}, 10),
        ("digits dp, 10 clients, 600 records each",
         {"scenario": "digits", "partitioning": "sampled", "records-per-client": 600}, 10),
        ("digits dp, 10 clients, 600 records each, plain aggregation",
         {"scenario": "digits", "partitioning": "sampled", "records-per-client": 600,
          "secure-aggregation": False}, 10),
    ]
    if args.data_root:
        for scenario in ("hospitals", "banks"):
            root = {"scenario": scenario, "data-root": args.data_root}
            configs += [(f"{scenario} dp", root, 10), (f"{scenario} no-dp", {**root, "dp": False}, 10)]
    runs = []
    for name, overrides, clients in configs:
        console.print(f"[bold]rounds[/]: {name} ({clients} clients)")
        runs.append(measure_run(name, overrides, clients, parallelism))
    print_table(console, f"federated rounds ({parallelism} cores)", RUN_COLUMNS, _run_rows(runs))
    print_table(console, "where the first round goes: seconds from the start of the run",
                STARTUP_COLUMNS, _startup_rows(runs))
    return {"results": [asdict(r) for r in runs]}


def section_startup(args: argparse.Namespace, console: Console, parallelism: int) -> dict:
    from simulations.cluster import shared_ray

    overrides = {"scenario": "digits", "num-server-rounds": 4}
    runs: dict[str, list[RunMeasurement]] = {"own Ray": [], "shared Ray": []}
    for index in range(args.startup_repeat):
        console.print(f"[bold]startup[/]: Ray started by the run ({index + 1})")
        runs["own Ray"].append(measure_run(f"own Ray {index + 1}", overrides, 10, parallelism))
    with shared_ray(parallelism):
        for index in range(args.startup_repeat):
            console.print(f"[bold]startup[/]: on a shared Ray ({index + 1})")
            runs["shared Ray"].append(
                measure_run(f"shared Ray {index + 1}", overrides, 10, parallelism))
    every = [run for group in runs.values() for run in group]
    medians = {name: statistics.median(r.time_to_first_round for r in group)
               for name, group in runs.items()}
    print_table(console, f"time to the first round, 10 digits clients ({parallelism} cores)",
                RUN_COLUMNS, _run_rows(every))
    print_table(console, "where the first round goes: seconds from the start of the run",
                STARTUP_COLUMNS, _startup_rows(every))
    print_table(console, "median time to the first round", ("Ray", "runs", "seconds"),
                [[name, str(len(runs[name])), f"{seconds:.1f}"] for name, seconds in medians.items()])
    return {"median_time_to_first_round": medians,
            "results": {name: [asdict(r) for r in group] for name, group in runs.items()}}


def section_scale(args: argparse.Namespace, console: Console, parallelism: int) -> dict:
    per_round = args.per_round
    runs = []
    for population in args.populations:
        console.print(f"[bold]scale[/]: {population:,} clients, {per_round} per round")
        overrides = {"scenario": "digits", "partitioning": "sampled",
                     "records-per-client": args.records_per_client,
                     "fraction-train": per_round / population,
                     "num-server-rounds": args.scale_rounds}
        runs.append(measure_run(f"population {population:,}", overrides, population, parallelism))
    smallest = runs[0].steady_round_seconds
    ratios = [r.steady_round_seconds / smallest for r in runs]
    print_table(console, f"scale: {per_round} clients per round, {args.records_per_client} "
                f"records each ({parallelism} cores)", (*RUN_COLUMNS, "round vs smallest"),
                [[*row, f"{ratio:.2f}x"] for row, ratio in zip(_run_rows(runs), ratios)])
    return {"records_per_client": args.records_per_client, "per_round": per_round,
            "results": [{**asdict(r), "round_vs_smallest_population": ratio}
                        for r, ratio in zip(runs, ratios)]}


def section_secagg(args: argparse.Namespace, console: Console, parallelism: int) -> dict:
    from simulations.bench_secagg import bench_cohorts

    section = bench_cohorts(args.secagg_clients, args.secagg_rounds, OUT_DIR, console,
                            repeat=args.secagg_repeat)
    if args.secagg_work_records:
        # The same cohort with the clients' work of a real split (60,000 MNIST records
        # over 100 clients is 600 each): the protocol's cost against a realistic round.
        heavier = {"partitioning": "sampled", "records-per-client": args.secagg_work_records}
        section["realistic_work"] = bench_cohorts([max(args.secagg_clients)], args.secagg_rounds,
                                                  OUT_DIR, console, heavier,
                                                  args.secagg_work_repeat)
    return section


def section_dpsgd(args: argparse.Namespace, console: Console, parallelism: int) -> dict:
    from simulations.bench_dpsgd import RESULT_COLUMNS, bench_steps, load_images, result_rows

    images, labels, data = load_images(args.data_root, 8192)
    methods = ["non-private", "opacus-hooks", "fast"]
    results = []
    for batch_size in (64, 256):
        console.print(f"[bold]dpsgd[/]: batch {batch_size}, one torch thread")
        results += bench_steps(images, labels, batch_size, 1, methods,
                               max(4, 1024 // batch_size), args.dpsgd_trials)
    print_table(console, f"local DP-SGD throughput, seed CNN, {data} 3x32x32, 1 thread",
                RESULT_COLUMNS, result_rows(results))
    return {"data": data, "records": len(labels), "results": [asdict(r) for r in results]}


RUNNERS: dict[str, Callable[[argparse.Namespace, Console, int], dict[str, Any]]] = {
    "dpsgd": section_dpsgd,
    "rounds": section_rounds,
    "startup": section_startup,
    "secagg": section_secagg,
    "scale": section_scale,
}


def main(argv: list[str] | None = None) -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--data-root", help="folder with the real datasets (../shared/data)")
    parser.add_argument("--secagg-clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--secagg-rounds", type=int, default=4)
    parser.add_argument("--secagg-work-records", type=int, default=600,
                        help="records per client of the secagg section's second run at the "
                        "largest cohort (0: none)")
    parser.add_argument("--secagg-repeat", type=int, default=7,
                        help="pairs of runs (plain, secure) per cohort; medians")
    parser.add_argument("--secagg-work-repeat", type=int, default=3,
                        help="pairs of runs of the cohort with --secagg-work-records")
    parser.add_argument("--populations", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--records-per-client", type=int, default=16)
    parser.add_argument("--scale-rounds", type=int, default=5)
    parser.add_argument("--dpsgd-trials", type=int, default=7)
    parser.add_argument("--startup-repeat", type=int, default=3,
                        help="runs of the startup section, each way (own Ray, shared Ray)")
    parser.add_argument("--json", default="benchmarks/benchmark.json", help="output file")
    args = parser.parse_args(argv)
    for flag in ("secagg_repeat", "secagg_work_repeat", "startup_repeat"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    parallelism = os.cpu_count() or 1
    console = Console(width=160)
    sections: dict[str, Any] = {}
    for name in args.sections:
        started = time.perf_counter()
        sections[name] = RUNNERS[name](args, console, parallelism)
        sections[name]["seconds"] = time.perf_counter() - started
        # Written after every section, so an interrupted suite keeps what it measured.
        command = ["python -m simulations.benchmark", *(sys.argv[1:] if argv is None else argv)]
        out = write_json(args.json, {"command": " ".join(command), "sections": sections})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
