"""Ray for the simulation engine, started early and so that its workers are ready.

Two things made the first round slow (16 s at 4 clients on 2 cores, before any training):

* Ray's start-up (about 4 s: GCS, raylet, workers) ran only after Python had imported
  torch, Opacus and Flower (about 5 s), one after the other. :class:`RayStarter` starts
  Ray on a background thread once the input has been checked, so the two overlap.
* Flower's backend starts Ray with a ``runtime_env`` (to pass ``PYTHONPATH``), and Ray does
  not hand its prestarted workers to a job with a runtime environment: every client actor
  waited for a fresh worker process (about 2 s). Here ``PYTHONPATH`` is put in the
  environment Ray's processes inherit instead, and Ray is started without a runtime
  environment, so the actors take the workers Ray prestarts. Flower uses a running Ray as
  it finds it.

The resources are Flower's: one CPU per client actor and as many actors as cores
(:func:`simulations.run.backend_config`).
"""

from __future__ import annotations

import os
import sys
import threading

import ray


def ray_init_args(cpus: int) -> dict:
    """``ray.init`` arguments for a simulation on ``cpus`` cores (no dashboard, no GPU)."""
    return {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False}


def export_python_path() -> None:
    """Let Ray's worker processes import what this process can (they inherit os.environ)."""
    paths = list(sys.path)
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def start_ray(cpus: int, quiet: bool = True) -> None:
    """Start Ray for a simulation unless it is already running."""
    if ray.is_initialized():
        return
    export_python_path()
    ray.init(**ray_init_args(cpus), log_to_driver=not quiet, logging_level="ERROR" if quiet else "INFO")


class RayStarter:
    """Starts Ray on a background thread; :meth:`wait` joins it (re-raising its error)."""

    def __init__(self, cpus: int, quiet: bool = True) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(cpus, quiet), daemon=True,
                                        name="ray-start")
        self._thread.start()

    def _run(self, cpus: int, quiet: bool) -> None:
        try:
            start_ray(cpus, quiet)
        except BaseException as error:  # re-raised in the caller's thread by wait()
            self._error = error

    def wait(self) -> None:
        """Block until Ray is up; raise what stopped it from starting."""
        self._thread.join()
        if self._error is not None:
            raise self._error
