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

Many simulations in turn (a sweep, the benchmark) can share one Ray instead of starting
their own: :func:`shared_ray` starts it once in a process of its own
(:mod:`simulations.ray_head`) and names it in ``RAY_ADDRESS``, which :func:`start_ray`
then connects to (about 0.8 s) instead of starting Ray (about 6 s). Flower's ``ray.
shutdown()`` at the end of a simulation only disconnects such a driver.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import wait
from typing import TypeVar

import ray

from task.background import in_background
from task.feature_cache import share_between_processes

T = TypeVar("T")


#: Largest object Ray passes inline, in the call itself, rather than through its shared-
#: memory object store. Ray's default, 100 KiB, sends every model (250 KB for the seed's
#: CNN), update and masked vector (500 KB) through the store: about 5 ms per call on 2
#: cores against 1.5-2.5 ms inline (``simulations.bench_secagg`` has the round times).
INLINE_OBJECT_BYTES = 4 * 2**20


#: How often the raylet retries connecting to its own object store, which it starts on
#: another thread just before: Ray's default, every 1,000 ms up to 10 times, cost a whole
#: second of ``ray.init`` whenever the store was not yet listening at the first try (1 run
#: in 4 in a quiet process). The same 10 s of patience, in 20 ms steps.
STORE_CONNECT_RETRY_MS = 20
STORE_CONNECT_ATTEMPTS = 500


def ray_init_args(cpus: int) -> dict:
    """``ray.init`` arguments for a simulation on ``cpus`` cores (no dashboard, no GPU,
    messages inline up to :data:`INLINE_OBJECT_BYTES`, the object store's connection
    retried every :data:`STORE_CONNECT_RETRY_MS`)."""
    return {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False,
            "_system_config": {
                "max_direct_call_object_size": INLINE_OBJECT_BYTES,
                "raylet_client_connect_timeout_milliseconds": STORE_CONNECT_RETRY_MS,
                "raylet_client_num_connect_attempts": STORE_CONNECT_ATTEMPTS,
            }}


def export_python_path() -> None:
    """Let Ray's worker processes import what this process can (they inherit os.environ)."""
    paths = list(sys.path)
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


#: Ray's own variable for the address of a running Ray to connect to.
RAY_ADDRESS_ENV = "RAY_ADDRESS"
#: How long :func:`shared_ray` waits for its Ray to start (it takes about 6 s on 2 cores).
SHARED_RAY_START_SECONDS = 120


def start_ray(cpus: int, quiet: bool = True) -> None:
    """Start Ray for a simulation unless it is already running, or connect to the Ray
    named in ``RAY_ADDRESS`` (whose own resources and settings then apply)."""
    if ray.is_initialized():
        return
    log_args = {"log_to_driver": not quiet, "logging_level": "ERROR" if quiet else "INFO"}
    if os.environ.get(RAY_ADDRESS_ENV):
        ray.init(address=os.environ[RAY_ADDRESS_ENV], **log_args)
        return
    _environment_for_workers()
    ray.init(**ray_init_args(cpus), **log_args)


def _environment_for_workers() -> None:
    """What Ray's workers inherit from the process that starts Ray: the project on their
    path and the shared folder (``task.feature_cache``) for the data and features."""
    export_python_path()
    share_between_processes()
    # Ray's notice that it will stop hiding GPUs from zero-GPU actors: there are none here.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@contextlib.contextmanager
def shared_ray(cpus: int) -> Iterator[str]:
    """Start Ray once for the simulations run inside this block, and stop it after.

    Ray runs in a process of its own (:mod:`simulations.ray_head`), started with this
    process's ``PYTHONPATH`` and shared folder so that its workers import the project and
    map the data the drivers decode. ``RAY_ADDRESS`` names it inside the block (the
    address is yielded); a ``RAY_ADDRESS`` already set is kept and used instead.
    """
    if os.environ.get(RAY_ADDRESS_ENV):
        yield os.environ[RAY_ADDRESS_ENV]
        return
    _environment_for_workers()
    head = subprocess.Popen([sys.executable, "-m", "simulations.ray_head", str(cpus)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = _first_line(head, SHARED_RAY_START_SECONDS)
        os.environ[RAY_ADDRESS_ENV] = address
        yield address
    finally:
        os.environ.pop(RAY_ADDRESS_ENV, None)
        head.stdin.close()  # type: ignore[union-attr]  (the head stops Ray and exits)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    """The first line ``process`` prints; RuntimeError if it exits or stays silent first."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(timeout)
    if lines and lines[0].strip():
        return lines[0].strip()
    if not lines:  # silent all along
        process.kill()
        process.wait()
        raise RuntimeError(f"Ray did not start for the simulations within {timeout:.0f} s")
    raise RuntimeError(f"Ray did not start for the simulations (exit status "
                       f"{process.wait()}); see the messages above")


def stop_ray() -> None:
    """Stop the Ray this process started (nothing if none runs)."""
    if ray.is_initialized():
        ray.shutdown()


def start_ray_during(prepare: Callable[[], T], cpus: int, quiet: bool = True) -> T:
    """Start Ray (:func:`start_ray`) on this thread while ``prepare`` runs on another;
    return what ``prepare`` returned, or raise what it raised, once both are done."""
    share_between_processes()  # before `prepare` decodes the data the actors will map
    prepared = in_background(prepare, "fedshield-prepare")
    try:
        start_ray(cpus, quiet)
    finally:
        wait([prepared])
    return prepared.result()
