"""Ray starts on the main thread while the driver's preparations run beside it, and one
Ray can serve many simulations in turn."""

import os
import socket
import threading

import pytest
import ray

from simulations.cluster import (
    RAY_ADDRESS_ENV,
    STORE_CONNECT_RETRY_MS,
    shared_ray,
    start_ray_during,
    stop_ray,
)
from simulations.run import simulate
from task.config import resolve_config


def test_preparations_run_beside_ray_and_their_errors_come_back():
    def broken() -> None:
        raise ValueError("config key 'x' is wrong")

    try:
        assert start_ray_during(lambda: threading.current_thread().name, 1) == "fedshield-prepare"
        assert ray.is_initialized()
        # The Ray it started runs with the settings of simulations.cluster (read back from
        # the GCS, where the raylet takes them from).
        settings = ray._private.state.state.get_system_config()
        assert settings["raylet_client_connect_timeout_milliseconds"] == STORE_CONNECT_RETRY_MS
        with pytest.raises(ValueError, match="config key 'x'"):
            start_ray_during(broken, 1)  # Ray already runs: the error still comes back
    finally:
        stop_ray()
    assert not ray.is_initialized()


@pytest.mark.slow
def test_simulations_in_turn_share_one_ray_and_it_stops_after(tmp_path, monkeypatch):
    monkeypatch.delenv(RAY_ADDRESS_ENV, raising=False)
    config = resolve_config({"scenario": "digits", "num-server-rounds": 1,
                             "out-dir": str(tmp_path)})
    used: list[str] = []
    with shared_ray(2) as address:
        assert os.environ[RAY_ADDRESS_ENV] == address
        for _ in range(2):
            summary = simulate(config, 2, on_round=lambda record: used.append(
                ray.get_runtime_context().gcs_address))
            assert summary["rounds_completed"] == 1
            assert not ray.is_initialized()  # Flower disconnected; the shared Ray runs on
    assert used == [address, address]
    assert RAY_ADDRESS_ENV not in os.environ
    host, port = address.rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()


def test_a_ray_that_cannot_start_is_reported(monkeypatch):
    monkeypatch.delenv(RAY_ADDRESS_ENV, raising=False)
    with pytest.raises(RuntimeError, match="Ray did not start .*exit status 2"):
        with shared_ray(0):
            pass
    assert RAY_ADDRESS_ENV not in os.environ
