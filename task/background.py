"""Run one function on a daemon thread and collect its result (or its error) later."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def in_background(work: Callable[[], T], name: str) -> Future[T]:
    """Start ``work()`` on a daemon thread named ``name``; ``result()`` of the returned
    future waits for it and returns its value or raises its exception on the caller's
    thread. A daemon thread, so a run that ends early is not held up by work it no longer
    needs (a Message round waiting for its replies, say)."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as error:  # noqa: BLE001  (re-raised by future.result())
            future.set_exception(error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
