"""What secure aggregation costs: round time with and without it, same data and clients.

    python -m simulations.bench_secagg                      # 10, 50 and 100 clients
    python -m simulations.bench_secagg --clients 10 --rounds 2
    python -m simulations.bench_secagg --clients 100 --set partitioning=sampled \
        --set records-per-client=600 --repeat 3             # more work per client

For each cohort size it runs the digits scenario (DP-SGD on, every client every round)
twice in one invocation -- plain aggregation and SecAgg+ -- and reports the steady-state
round time (median over the rounds after the first, which also starts Ray's actors and
loads the data; a median, so one round held up by the machine does not move it), the
overhead, and where the secure round spends its extra time:

* ``CPU s plain/secure`` and ``CPU overhead``: the CPU seconds of a steady round (the
  driver and every Ray process, read at each round's end) and how much more a secure one
  takes. Where the two overheads agree, the secure round's extra time is work, not
  waiting (at 100 clients on 2 cores they agree pair by pair: the machine's speed, which
  moves from minute to minute, moves both);
* ``stages s``: wall time of the protocol-only Message rounds (setup, share secrets,
  unmask; the clients train in masked input) inside the simulation, transport and client
  work included, and ``stages / plain``, that time as a share of the plain round
  (masking, in the training stage, is not in it). From round 2 on, with every client in
  every round, that is the unmask stage alone, which carries the next round's share
  secrets;
* ``protocol s``: the protocol's own compute for the whole cohort (every client and the
  server, run one after another on one core by ``privacy.secagg.run_secagg_round``), for a
  vector of the model's size plus the metric coordinates.

``--repeat N`` runs N such pairs and reports the medians over the pairs; every other pair
runs the secure side first, so a machine that slows down or speeds up over a minute
weighs on both sides alike. On 2 cores two identical runs differ by up to 15% in their
steady round time, so one pair's overhead moves by 10-20 points, and the median of seven
pairs still by about five from one invocation to the next.

Timings are wall-clock on a possibly shared machine: read them as indicative. They belong
here, never in timed unit tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import psutil
from rich.console import Console

from fedshield.cli import parse_overrides
from privacy.secagg import run_secagg_round
from server.federation import initial_weights
from server.results import RoundRecord
from server.secure_workflow import protocol_config
from simulations.bench_report import print_table, write_json
from simulations.memory import tree_cpu_seconds
from simulations.run import simulate
from task.config import RunConfig, resolve_config
from task.datasets import load_dataset
from task.model import model_input_shape
from task.scenarios import SCENARIOS
from task.secure_vector import VectorLayout

PROTOCOL_STAGES = ("share_keys", "share_secrets", "unmask")


@dataclass
class CohortResult:
    clients: int
    rounds: int
    plain_round_seconds: float
    secure_round_seconds: float
    overhead: float
    plain_round_cpu_seconds: float
    secure_round_cpu_seconds: float
    cpu_overhead: float
    secure_stage_seconds: float
    stage_share: float
    protocol_seconds: float
    vector_length: int
    plain_accuracy: float
    secure_accuracy: float
    pair_overheads: list[float]
    pair_cpu_overheads: list[float]


def steady(values: Sequence[float]) -> float:
    """Median of the rounds' ``values`` after the first round (all of them when there is
    only one)."""
    return statistics.median(values[1:] or values)


@dataclass
class Run:
    """One simulation: its rounds, its summary, and the CPU seconds of each round (the
    driver and every Ray process; :func:`simulations.memory.tree_cpu_seconds`)."""

    records: list[RoundRecord]
    summary: dict
    cpu_seconds: list[float]


def run(config: RunConfig, clients: int) -> Run:
    records: list[RoundRecord] = []
    process = psutil.Process()
    marks = [tree_cpu_seconds(process)]

    def on_round(record: RoundRecord) -> None:
        marks.append(tree_cpu_seconds(process))
        records.append(record)

    summary = simulate(config, clients, on_round=on_round)
    return Run(records, summary, [b - a for a, b in zip(marks, marks[1:])])


def model_layout(config: RunConfig) -> VectorLayout:
    """The secure-aggregation vector layout of the scenario's model."""
    test = load_dataset(SCENARIOS[config.scenario].dataset, config.data_root or None,
                        config.seed).test
    shape = model_input_shape(tuple(test.images.shape[1:]), config.model)
    weights = initial_weights(config, shape, len(test.classes))
    return VectorLayout.for_run(weights, config)


def protocol_seconds(config: RunConfig, clients: int, layout: VectorLayout) -> float:
    """One in-process SecAgg+ round over ``clients`` random vectors of ``layout``."""
    gen = np.random.default_rng(0)
    vectors = {u: gen.normal(0, 0.01, layout.length) for u in range(clients)}
    started = time.perf_counter()
    run_secagg_round(vectors, protocol_config(config, clients, layout))
    return time.perf_counter() - started


def bench_cohort(base: dict, clients: int, repeat: int = 1) -> CohortResult:
    """``repeat`` pairs of runs, plain then secure and secure then plain in turn; medians
    over the pairs."""
    plain_config = resolve_config({**base, "secure-aggregation": False})
    secure_config = resolve_config({**base, "secure-aggregation": True})
    plain_s, secure_s, plain_cpu, secure_cpu, stages = [], [], [], [], []
    for pair in range(repeat):
        order = (plain_config, secure_config) if pair % 2 == 0 else (secure_config, plain_config)
        runs = {config.secure_aggregation: run(config, clients) for config in order}
        plain, secure = runs[False], runs[True]
        plain_s.append(steady([r.seconds for r in plain.records]))
        secure_s.append(steady([r.seconds for r in secure.records]))
        plain_cpu.append(steady(plain.cpu_seconds))
        secure_cpu.append(steady(secure.cpu_seconds))
        stages.append(steady([sum(r["seconds"].get(s, 0.0) for s in PROTOCOL_STAGES)
                              for r in secure.summary["secure_aggregation_rounds"]]))
    overheads = [s / p - 1.0 for p, s in zip(plain_s, secure_s)]
    cpu_overheads = [s / p - 1.0 for p, s in zip(plain_cpu, secure_cpu)]
    layout = model_layout(secure_config)
    return CohortResult(
        clients=clients,
        rounds=len(secure.records),
        plain_round_seconds=statistics.median(plain_s),
        secure_round_seconds=statistics.median(secure_s),
        overhead=statistics.median(overheads),
        plain_round_cpu_seconds=statistics.median(plain_cpu),
        secure_round_cpu_seconds=statistics.median(secure_cpu),
        cpu_overhead=statistics.median(cpu_overheads),
        secure_stage_seconds=statistics.median(stages),
        stage_share=statistics.median([st / p for st, p in zip(stages, plain_s)]),
        protocol_seconds=protocol_seconds(secure_config, clients, layout),
        vector_length=layout.length,
        plain_accuracy=plain.summary["accuracy"],
        secure_accuracy=secure.summary["accuracy"],
        pair_overheads=overheads,
        pair_cpu_overheads=cpu_overheads,
    )


COHORT_COLUMNS = ("clients", "plain round s", "secure round s", "overhead", "each pair",
                  "CPU s plain/secure", "CPU overhead", "stages s", "stages / plain",
                  "protocol s", "accuracy plain/secure")


def cohort_rows(results: list[CohortResult]) -> list[list[str]]:
    """Table cells for :data:`COHORT_COLUMNS`."""
    return [[str(r.clients), f"{r.plain_round_seconds:.2f}", f"{r.secure_round_seconds:.2f}",
             f"{r.overhead:+.0%}", " ".join(f"{o:+.0%}" for o in r.pair_overheads),
             f"{r.plain_round_cpu_seconds:.2f} / {r.secure_round_cpu_seconds:.2f}",
             f"{r.cpu_overhead:+.0%}", f"{r.secure_stage_seconds:.2f}", f"{r.stage_share:.0%}",
             f"{r.protocol_seconds:.2f}", f"{r.plain_accuracy:.3f} / {r.secure_accuracy:.3f}"]
            for r in results]


def bench_cohorts(clients: list[int], rounds: int, out_dir: str, console: Console,
                  overrides: dict | None = None, repeat: int = 1) -> dict:
    """Every cohort size, ``repeat`` pairs of plain and secure runs; prints the table,
    returns the JSON section. ``overrides`` are run-config items on top of the digits
    scenario with DP-SGD on."""
    overrides = dict(overrides or {})
    base = {"scenario": "digits", **overrides, "num-server-rounds": rounds, "out-dir": out_dir}
    results = []
    for size in clients:
        console.print(f"[bold]secagg[/]: {size} clients, {repeat} pair(s) of runs, plain "
                      "and secure aggregation")
        results.append(bench_cohort(base, size, repeat))
    workload = ", ".join(f"{k}={v}" for k, v in {"scenario": base["scenario"], **overrides}.items())
    print_table(console, f"secure aggregation overhead, {workload}, DP-SGD on "
                f"({os.cpu_count()} cores)", COHORT_COLUMNS, cohort_rows(results))
    return {"scenario": base["scenario"], "overrides": overrides, "dp": True,
            "repeat": repeat, "results": [asdict(r) for r in results]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (>= 2)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a run-config item for both runs, e.g. --set local-epochs=2")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pairs of runs (plain, secure) per cohort; medians are reported")
    parser.add_argument("--json", default="benchmarks/secagg.json", help="output file")
    parser.add_argument("--out", default="runs/bench-secagg", help="folder for the runs")
    args = parser.parse_args(argv)
    console = Console()
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    section = bench_cohorts(args.clients, args.rounds, args.out, console,
                            parse_overrides(args.sets), args.repeat)
    out = write_json(args.json, section)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
