"""``fedshield sweep``: test accuracy against epsilon, over seeds, with a non-private baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    scenario: Annotated[str, typer.Option(help="digits, hospitals, banks or cifar10")] = "digits",
    epsilons: Annotated[str, typer.Option(help="comma-separated per-client target epsilons")] = "0.5,1,2,3,8",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds; each epsilon runs once per seed")] = "0,1,2",
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="also run without DP")] = True,
    clients: Annotated[Optional[int], typer.Option(help="number of virtual clients [scenario preset]")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="server rounds [scenario preset]")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="folder with the real datasets (e.g. ../shared/data)")] = None,
    partitioning: Annotated[Optional[str], typer.Option(help="iid, dirichlet or quantity")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Dirichlet concentration for dirichlet/quantity skew")] = None,
    out: Annotated[Path, typer.Option(help="folder for sweep.csv, sweep.json, sweep.png and the runs")] = Path("sweep"),
    set_: Annotated[list[str], typer.Option("--set", help="any other config key, e.g. --set local-epochs=2")] = [],
) -> None:
    """Run a scenario at each target epsilon and seed (plus a non-private baseline) and
    write sweep.csv, sweep_summary.csv, sweep.json and sweep.png into --out."""
    from fedshield.cli import console, fail, parse_overrides
    from simulations.feasibility import check_feasible
    from simulations.sweep import SweepRun, parse_epsilons, parse_seeds, plan_sweep, run_sweep, write_sweep
    from task.config import ConfigError
    from task.datasets import DataRootError
    from task.partition import PartitionError
    from task.scenarios import SCENARIOS

    try:
        epsilon_list = parse_epsilons(epsilons)
    except ValueError as error:
        fail(f"--epsilons {error}")
    try:
        seed_list = parse_seeds(seeds)
    except ValueError as error:
        fail(f"--seeds {error}")
    if clients is not None and clients < 1:
        fail(f"--clients must be >= 1, got {clients}")
    overrides = parse_overrides(set_)
    flags = {"scenario": scenario, "num-server-rounds": rounds, "data-root": data_root,
             "partitioning": partitioning, "dirichlet-alpha": alpha}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    try:
        configs = plan_sweep(overrides, epsilon_list, seed_list, out, baseline=baseline)
        first = configs[0]
        num_clients = clients or SCENARIOS[first.scenario].default_clients
        if first.partitioning == "sampled":
            raise PartitionError(
                "partitioning 'sampled' gives clients overlapping records, so its accuracy "
                "says nothing about privacy against utility; sweep with iid, dirichlet or quantity"
            )
        check_feasible(first, num_clients)
    except (ConfigError, DataRootError, PartitionError) as error:
        fail(str(error))

    lengths = sorted({c.num_server_rounds for c in configs})  # small budgets may differ
    rounds = str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
    settings = {"scenario": first.scenario, "clients": num_clients, "rounds": lengths,
                "partitioning": first.partitioning,
                "dirichlet-alpha": first.dirichlet_alpha, "delta": first.delta,
                "epsilons": epsilon_list, "seeds": seed_list, "overrides": overrides}
    skew = "IID" if first.partitioning == "iid" else f"{first.partitioning} α={first.dirichlet_alpha:g}"
    done: list[SweepRun] = []

    def title() -> str:
        return (f"{first.scenario}: {num_clients} clients, {rounds} rounds, "
                f"{skew}, {len({r.seed for r in done})} seed(s)")

    def report(index: int, run: SweepRun) -> None:
        done.append(run)
        write_sweep(out, done, settings, title())  # an interrupted sweep keeps what it ran
        what = "non-private" if run.target_epsilon is None else f"epsilon <= {run.target_epsilon:g}"
        spent = "" if run.epsilon_spent_max is None else f", spent {run.epsilon_spent_max:.3f}"
        console.print(f"[{index + 1}/{len(configs)}] {what}, seed {run.seed}: accuracy "
                      f"{run.accuracy:.4f}{spent} ({run.seconds:.0f} s)", highlight=False)

    runs = run_sweep(configs, num_clients, on_run=report)
    paths = write_sweep(out, runs, settings, title())
    console.print(f"[bold green]done[/]: {len(runs)} runs; {paths['csv']}, {paths['json']}, "
                  f"{paths['png']}", highlight=False)
