"""The ``fedshield`` command."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:
    from task.config import RunConfig

app = typer.Typer(
    help="fedshield: federated learning with differential privacy, secure aggregation "
    "and an auditable privacy ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """fedshield: federated learning with DP, secure aggregation and a privacy ledger."""


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit (no stack trace as a user interface)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs to typed values (TOML scalars: 3, 0.5, true, "text")."""
    import tomllib

    parsed: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed[key.strip()] = value
    return parsed


@app.command()
def simulate(
    scenario: Annotated[str, typer.Option(help="digits, hospitals, banks or cifar10")] = "digits",
    clients: Annotated[Optional[int], typer.Option(help="number of virtual clients [scenario preset]")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="server rounds [scenario preset]")] = None,
    target_epsilon: Annotated[Optional[float], typer.Option(help="per-client epsilon for the whole run; the noise is calibrated to it [scenario preset]")] = None,
    noise_multiplier: Annotated[Optional[float], typer.Option(help="fixed noise multiplier sigma instead of a target epsilon")] = None,
    no_dp: Annotated[bool, typer.Option("--no-dp", help="train without differential privacy (a baseline)")] = False,
    no_secagg: Annotated[bool, typer.Option("--no-secagg", help="sum the updates in the clear instead of by secure aggregation (a baseline)")] = False,
    delta: Annotated[Optional[float], typer.Option(help="DP delta, must be below 1/N_local")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="folder with the real datasets (e.g. ../shared/data)")] = None,
    partitioning: Annotated[Optional[str], typer.Option(help="iid, dirichlet, quantity or sampled (overlapping per-client samples of records-per-client records; scale experiments only)")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Dirichlet concentration for dirichlet/quantity skew")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed for partitions and the initial model")] = None,
    out: Annotated[Optional[str], typer.Option(help="directory for run results [runs]")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="any config key, e.g. --set local-epochs=2")] = [],
    verbose: Annotated[bool, typer.Option(help="show Flower's and Ray's logs")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Simulate a federation on this machine (Flower simulation engine, Ray backend)."""
    from task.config import ConfigError, resolve_config
    from task.scenarios import SCENARIOS

    if noise_multiplier is not None and target_epsilon is not None:
        fail("give either --target-epsilon or --noise-multiplier, not both")
    if no_dp and (noise_multiplier is not None or target_epsilon is not None):
        fail("--no-dp cannot be combined with --target-epsilon or --noise-multiplier")
    overrides = parse_overrides(set_)
    flags = {
        "scenario": scenario,
        "num-server-rounds": rounds,
        "target-epsilon": target_epsilon,
        "noise-multiplier": noise_multiplier,
        "delta": delta,
        "data-root": data_root,
        "partitioning": partitioning,
        "dirichlet-alpha": alpha,
        "seed": seed,
        "out-dir": out,
    }
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if no_secagg:
        overrides["secure-aggregation"] = False
    if no_dp:
        overrides["dp"] = False
    try:
        config = resolve_config(overrides)
        if clients is not None and clients < 1:
            raise ConfigError(f"--clients must be >= 1, got {clients}")
    except ConfigError as error:
        fail(str(error))
    num_clients = clients or SCENARIOS[config.scenario].default_clients
    from simulations.cluster import start_ray_during, stop_ray

    problem = start_ray_during(lambda: _prepare_simulation(config, num_clients),
                               os.cpu_count() or 1, quiet=not verbose)
    if problem:
        stop_ray()
        fail(problem)
    from simulations.progress import RoundProgress
    from simulations.run import simulate as run_simulate

    with RoundProgress(config, num_clients, console, enabled=not json_out) as progress:
        summary = run_simulate(config, num_clients, on_round=progress.update, verbose=verbose)
    if json_out:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return
    privacy = (f"largest epsilon {summary['epsilon_max']:.4f} (delta {summary['delta']:g})"
               if summary["dp"] else "no DP")
    console.print(
        f"[bold green]done[/]: {summary['rounds_completed']} rounds, {summary['clients']} clients, "
        f"accuracy {summary['accuracy']:.4f}, {privacy}, {summary['seconds']:.1f} s\n"
        f"{summary['stop_reason']}; results in {summary['results_dir']}",
        highlight=False,
        soft_wrap=True,
    )


def _prepare_simulation(config: RunConfig, num_clients: int) -> str:
    """Check that ``config`` can run with ``num_clients`` clients (the data loads and
    splits) and import the simulation (torch, Flower, Opacus); the problem, or ''."""
    from simulations.feasibility import check_feasible
    from task.config import ConfigError
    from task.datasets import DataRootError
    from task.partition import PartitionError

    try:
        check_feasible(config, num_clients)
    except (ConfigError, DataRootError, PartitionError) as error:
        return str(error)
    from simulations.run import start_warm_accounting  # its imports take the time

    start_warm_accounting(config, num_clients)  # meanwhile, on the core Ray leaves idle
    return ""


def _register_commands() -> None:
    """Further commands live in fedshield/commands/, one module each."""
    from importlib import import_module

    from fedshield.commands import COMMAND_GROUPS, COMMANDS

    for name, module_path in COMMAND_GROUPS.items():
        app.add_typer(import_module(module_path).app, name=name)
    for name, module_path in COMMANDS.items():
        app.command(name)(import_module(module_path).command)


def main() -> None:
    _register_commands()
    app()


if __name__ == "__main__":
    main()
