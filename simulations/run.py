"""The one-command simulation: many clients on one machine, Flower's simulation engine.

Everything is checked before Ray starts (configuration, data root, whether the data can
be split among the clients: :mod:`simulations.feasibility`), so a mistake costs a second,
not a cluster start-up.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from client.app import app as client_app
from server.app import make_server_app
from server.results import RoundRecord
from simulations import dispatch
from simulations.cluster import ray_init_args, start_ray
from simulations.feasibility import check_feasible
from task.config import RunConfig
from task.feature_cache import share_between_processes

__all__ = ["backend_config", "check_feasible", "run_apps", "simulate"]


def backend_config(cpus: int | None = None) -> dict:
    """Ray resources: one CPU per client actor, as many actors as cores."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": ray_init_args(cpus or os.cpu_count() or 1),
    }


def simulate(
    config: RunConfig,
    num_clients: int,
    on_round: Callable[[RoundRecord], None] | None = None,
    verbose: bool = False,
) -> dict:
    """Run ``config`` with ``num_clients`` virtual clients; return the run summary.

    Ray is started here (``simulations.cluster``) unless it already runs; Flower shuts it
    down when the simulation ends.
    """
    share_between_processes()  # the data decoded here is mapped by the actors, not decoded again
    check_feasible(config, num_clients)
    summaries: list[dict] = []
    run_apps(make_server_app(config, on_round=on_round, on_summary=summaries.append),
             client_app, num_clients, verbose)
    if not summaries:
        raise RuntimeError("the simulation ended without a summary; see the log above")
    return summaries[0]


def run_apps(server: ServerApp, client: ClientApp, num_clients: int,
             verbose: bool = False) -> None:
    """Run ``server`` against ``num_clients`` virtual nodes of ``client`` on
    Flower's simulation engine, with this project's dispatch (``simulations.dispatch``)
    and Ray settings (``simulations.cluster``)."""
    dispatch.install()
    start_ray(os.cpu_count() or 1, quiet=not verbose)
    if not verbose:
        # Flower announces run_simulation's deprecation at WARNING on every run; our own
        # round log and progress bar carry what the user needs.
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=num_clients,
        backend_config=backend_config(),
        verbose_logging=verbose,
    )
