"""``fedshield partition``: each client's training partition in its own folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    scenario: Annotated[str, typer.Option(help="digits, hospitals, banks or cifar10")] = "digits",
    clients: Annotated[Optional[int], typer.Option(help="number of clients [scenario preset]")] = None,
    out: Annotated[Path, typer.Option(help="folder receiving client-<i>/ per client")] = Path("partitions"),
    data_root: Annotated[Optional[str], typer.Option(help="folder with the real datasets")] = None,
    partitioning: Annotated[Optional[str], typer.Option(help="iid, dirichlet or quantity")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Dirichlet concentration for dirichlet/quantity skew")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed of the split (use the run's seed)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="any config key, e.g. --set val-fraction=0.2")] = [],
    force: Annotated[bool, typer.Option("--force", help="replace existing partitions")] = False,
) -> None:
    """Write each client's partition to <out>/client-<i>/ (data.npz + manifest.json).

    The split is the simulation's (same scenario, clients, partitioning and seed give the
    same records), so a deployed federation trains on what its rehearsal did. Mount
    client-<i>/ read-only into client i's container and start its SuperNode with
    --node-config "data-path='/data'".
    """
    from fedshield.cli import console, fail, parse_overrides
    from task.config import ConfigError, resolve_config
    from task.datasets import DataRootError
    from task.partition import PartitionError
    from task.partition_store import PartitionStoreError, write_client_partitions
    from task.scenarios import SCENARIOS

    overrides = parse_overrides(set_)
    flags = {"scenario": scenario, "data-root": data_root, "partitioning": partitioning,
             "dirichlet-alpha": alpha, "seed": seed}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    try:
        config = resolve_config(overrides)
        num_clients = SCENARIOS[config.scenario].default_clients if clients is None else clients
        written = write_client_partitions(config, num_clients, out, force=force)
    except (ConfigError, DataRootError, PartitionError, PartitionStoreError, OSError) as error:
        fail(str(error))
    for folder, records in written:
        console.print(f"wrote {folder} ({records} records)", highlight=False)
