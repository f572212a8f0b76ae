"""The driver's heap is frozen for a run and given back to the collector after it."""

from __future__ import annotations

import gc
import weakref

import pytest

from simulations.frozen_heap import frozen_heap


class Node:
    def __init__(self) -> None:
        self.partner: Node | None = None


def test_objects_alive_on_entry_are_skipped_during_the_run_and_collected_after_it():
    first, second = Node(), Node()
    first.partner, second.partner = second, first  # a cycle: only the collector frees it
    gone = weakref.ref(first)
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        del first, second
        gc.collect()
        assert gone() is not None  # frozen: the collection walked past it
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None


def test_the_heap_is_given_back_when_the_run_fails():
    with pytest.raises(RuntimeError, match="the run failed"), frozen_heap():
        raise RuntimeError("the run failed")
    assert gc.get_freeze_count() == 0
