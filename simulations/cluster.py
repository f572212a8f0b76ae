"""Ray for the simulation engine, started so that its prestarted workers are used.

Flower's backend starts Ray with a ``runtime_env`` (to pass ``PYTHONPATH``), and Ray does
not hand its prestarted workers to a job with a runtime environment: every client actor
waited for a fresh worker process (about 2 s of the first round on 2 cores). Here
``PYTHONPATH`` is put in the environment Ray's processes inherit instead, and Ray is
started without a runtime environment, so the actors take the workers Ray prestarts.
Flower uses a running Ray as it finds it (and shuts it down when the simulation ends).

Ray is started from the main thread: started on a background thread (to overlap its 4 s
with the driver's imports), its driver later lost its connection to the GCS.

The resources are Flower's: one CPU per client actor and as many actors as cores
(:func:`simulations.run.backend_config`).
"""

from __future__ import annotations

import os
import sys

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
    # Ray's notice that it will stop hiding GPUs from zero-GPU actors: there are none here.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(**ray_init_args(cpus), log_to_driver=not quiet, logging_level="ERROR" if quiet else "INFO")
