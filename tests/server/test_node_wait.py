"""Round 1 samples from the whole population when the population is known."""

from __future__ import annotations

import pytest

from server.federation import FederationError, wait_for_nodes


class RegisteringGrid:
    """The part of Flower's Grid the wait reads, with nodes registering as in a
    simulation: ``batch`` more at each look, up to ``population``."""

    def __init__(self, population: int, batch: int) -> None:
        self.population, self.batch, self.looks = population, batch, 0

    def get_node_ids(self) -> list[int]:
        self.looks += 1
        return list(range(min(self.population, self.looks * self.batch)))


def test_a_known_population_is_waited_for_whole():
    grid = RegisteringGrid(population=1000, batch=300)
    assert len(wait_for_nodes(grid, minimum=2, timeout=30, population=1000)) == 1000
    assert grid.looks == 4


def test_without_a_population_the_minimum_is_enough():
    grid = RegisteringGrid(population=1000, batch=300)
    assert len(wait_for_nodes(grid, minimum=2, timeout=30)) == 300


def test_a_population_that_never_completes_is_named():
    with pytest.raises(FederationError, match="only 300 of the simulation's 1000 client nodes"):
        wait_for_nodes(RegisteringGrid(population=300, batch=300), minimum=2, timeout=0.05,
                       population=1000)
    with pytest.raises(FederationError, match="config key 'min-train-clients'"):
        wait_for_nodes(RegisteringGrid(population=1, batch=1), minimum=2, timeout=0.05)
