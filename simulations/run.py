"""The one-command simulation: many clients on one machine, Flower's simulation engine.

Everything is checked before Ray starts (configuration, data root, whether the data can
be split among the clients: :mod:`simulations.feasibility`), so a mistake costs a second,
not a cluster start-up.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from collections.abc import Callable

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation
from threadpoolctl import threadpool_limits

from client.app import app as client_app
from client.data import training_record_counts
from client.local_round import warm_accounting
from server.app import make_server_app
from server.results import RoundRecord
from simulations import actor, batching, dispatch
from simulations.cluster import ray_init_args, start_ray
from simulations.feasibility import check_feasible
from simulations.frozen_heap import frozen_heap
from task.config import RunConfig
from task.feature_cache import share_between_processes

log = logging.getLogger(__name__)

# Opacus' accountants load with the driver, not on its accounting thread while Ray starts
# (start_warm_accounting); the clients load them only if they must (privacy.accounting).
importlib.import_module("privacy.prv_domain")

__all__ = ["backend_config", "check_feasible", "run_apps", "simulate",
           "start_warm_accounting"]


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
    pace = start_warm_accounting(config, num_clients)

    def round_ended(record: RoundRecord) -> None:
        pace.round_ended(record.server_round)
        if on_round is not None:
            on_round(record)

    summaries: list[dict] = []
    try:
        run_apps(make_server_app(config, on_round=round_ended, on_summary=summaries.append,
                                 population=num_clients),
                 client_app, num_clients, verbose)
    finally:
        pace.stop()
    if not summaries:
        raise RuntimeError("the simulation ended without a summary; see the log above")
    return summaries[0]


class AccountingPace:
    """Keeps the driver's accounting (:func:`client.local_round.warm_accounting`) a few
    rounds ahead of the run, not all of it at once.

    The first :data:`ROUNDS_AHEAD` rounds' epsilons are computed while Ray starts; each
    later one when the run is that many rounds short of it. All at once, they competed
    with the client actors for the cores in the first round: 40 rounds of the banks
    scenario are 4.7 s of PRV evaluations.
    """

    ROUNDS_AHEAD = 2

    def __init__(self) -> None:
        self._ended = 0
        self._stopped = False
        self._changed = threading.Condition()

    def round_ended(self, server_round: int) -> None:
        with self._changed:
            self._ended = max(self._ended, server_round)
            self._changed.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """The run is over: the accounting ahead stops."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def before_round(self, server_round: int) -> bool:
        """Wait until ``server_round``'s epsilons are due; False once the run is over."""
        with self._changed:
            self._changed.wait_for(lambda: self._stopped
                                   or server_round <= self._ended + self.ROUNDS_AHEAD)
            return not self._stopped


_accounting_started: dict[tuple[str, int], AccountingPace] = {}


def start_warm_accounting(config: RunConfig, num_clients: int) -> AccountingPace:
    """Compute, on a background thread, the noise multipliers and epsilons the clients
    will need (:func:`client.local_round.warm_accounting`), once per run setting, at the
    pace of the run that reports its rounds to the returned :class:`AccountingPace`.

    Ray's start keeps one of two cores busy for about 5 s while the other waits; the
    results land in the run's shared folder, and a client that needs one before it is
    there computes it itself, as it always did. Errors are left to the clients to report.

    The driver's BLAS runs on one thread from here on, as the client actors' does (Ray
    gives them ``OMP_NUM_THREADS=1``). With one per core, each of the PRV accountant's
    dot products waited on a BLAS thread that Ray's start or a client actor kept off its
    core: in about one run in five the calibration took over 10 s instead of 1.3 s, the
    actors calibrated it themselves, and the accounting ahead slowed every later round
    twofold.
    """
    threadpool_limits(1, user_api="blas")
    key = (repr(config), num_clients)
    if key in _accounting_started and not _accounting_started[key].stopped:
        return _accounting_started[key]  # the CLI starts it before simulate() is called
    pace = _accounting_started[key] = AccountingPace()

    def account() -> None:
        try:
            warm_accounting(config, training_record_counts(config, num_clients),
                            before_round=pace.before_round)
        except Exception:  # noqa: BLE001  (a client meets and reports the same problem)
            log.debug("accounting ahead of the clients failed", exc_info=True)

    threading.Thread(target=account, name="fedshield-accounting", daemon=True).start()
    return pace


def run_apps(server: ServerApp, client: ClientApp, num_clients: int,
             verbose: bool = False) -> None:
    """Run ``server`` against ``num_clients`` virtual nodes of ``client`` on
    Flower's simulation engine, with this project's dispatch (``simulations.dispatch``),
    batched actor calls (``simulations.batching``), Ray settings (``simulations.cluster``)
    and client actor (``simulations.actor``)."""
    dispatch.install()
    batching.install()
    actor.install()
    start_ray(os.cpu_count() or 1, quiet=not verbose)
    if not verbose:
        # Flower announces run_simulation's deprecation at WARNING on every run; our own
        # round log and progress bar carry what the user needs.
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    with frozen_heap():
        run_simulation(
            server_app=server,
            client_app=client,
            num_supernodes=num_clients,
            backend_config=backend_config(),
            verbose_logging=verbose,
        )
