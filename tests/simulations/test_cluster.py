"""Ray starts on the main thread while the driver's preparations run beside it."""

import threading

import pytest
import ray

from simulations.cluster import start_ray_during, stop_ray


def test_preparations_run_beside_ray_and_their_errors_come_back():
    def broken() -> None:
        raise ValueError("config key 'x' is wrong")

    try:
        assert start_ray_during(lambda: threading.current_thread().name, 1) == "fedshield-prepare"
        assert ray.is_initialized()
        with pytest.raises(ValueError, match="config key 'x'"):
            start_ray_during(broken, 1)  # Ray already runs: the error still comes back
    finally:
        stop_ray()
    assert not ray.is_initialized()
