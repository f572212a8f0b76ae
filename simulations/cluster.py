"""Ray for the simulation engine, started so that its prestarted workers are used.

Flower's backend starts Ray with a ``runtime_env`` (to pass ``PYTHONPATH``), and Ray does
not hand its prestarted workers to a job with a runtime environment: every client actor
waited for a fresh worker process (about 2 s of the first round on 2 cores). Here
``PYTHONPATH`` is put in the environment Ray's processes inherit instead, and Ray is
started without a runtime environment, so the actors take the workers Ray prestarts.
Flower uses a running Ray as it finds it (and shuts it down when the simulation ends).

Ray is started from the main thread: started on a background thread, its driver later
lost its connection to the GCS. Its start (about 4 s on 2 cores) is mostly waiting for
its own processes, so :func:`start_ray_during` runs the driver's other preparations
(importing torch, Flower and Opacus, loading and checking the data: about 6 s) on a
background thread meanwhile.

The resources are Flower's: one CPU per client actor and as many actors as cores
(:func:`simulations.run.backend_config`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

import ray

from task.feature_cache import share_between_processes

T = TypeVar("T")


#: Largest object Ray passes inline, in the call itself, rather than through its shared-
#: memory object store. Ray's default, 100 KiB, sends every model (250 KB for the seed's
#: CNN), update and masked vector (500 KB) through the store: about 5 ms per call on 2
#: cores against 1.5-2.5 ms inline (``simulations.bench_secagg`` has the round times).
INLINE_OBJECT_BYTES = 4 * 2**20


def ray_init_args(cpus: int) -> dict:
    """``ray.init`` arguments for a simulation on ``cpus`` cores (no dashboard, no GPU,
    messages inline up to :data:`INLINE_OBJECT_BYTES`)."""
    return {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False,
            "_system_config": {"max_direct_call_object_size": INLINE_OBJECT_BYTES}}


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
    share_between_processes()  # the actors share decoded data and features (task.feature_cache)
    # Ray's notice that it will stop hiding GPUs from zero-GPU actors: there are none here.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(**ray_init_args(cpus), log_to_driver=not quiet, logging_level="ERROR" if quiet else "INFO")


def stop_ray() -> None:
    """Stop the Ray this process started (nothing if none runs)."""
    if ray.is_initialized():
        ray.shutdown()


def start_ray_during(prepare: Callable[[], T], cpus: int, quiet: bool = True) -> T:
    """Start Ray (:func:`start_ray`) on this thread while ``prepare`` runs on another;
    return what ``prepare`` returned, or raise what it raised, once both are done."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = prepare()
        except BaseException as error:  # noqa: BLE001  (re-raised on the caller's thread)
            outcome["error"] = error

    share_between_processes()  # before `prepare` decodes the data the actors will map
    thread = threading.Thread(target=run, name="fedshield-prepare", daemon=True)
    thread.start()
    try:
        start_ray(cpus, quiet)
    finally:
        thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
