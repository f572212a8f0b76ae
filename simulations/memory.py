"""Resident memory and CPU time of this process and all its children (Ray workers included)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

import psutil


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and every descendant still alive."""
    return sum(_over_tree(process, lambda proc: proc.memory_info().rss))


def tree_cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds (user and system) spent so far by ``process`` and every descendant
    still alive."""
    return sum(_over_tree(process, lambda proc: sum(proc.cpu_times()[:2])))


def _over_tree(process: psutil.Process, read: Callable[[psutil.Process], float]) -> list[float]:
    values = []
    for proc in [process, *process.children(recursive=True)]:
        try:
            values.append(read(proc))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return values


class PeakRSS:
    """Samples the process tree's RSS every ``interval`` seconds; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._process = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self._process))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self._process))
