"""The simulation's own client actor: Flower's behaviour without Flower's simulation
package in every actor process."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

from server.federation import wait_for_nodes
from server.messaging import send_and_receive
from simulations.run import run_apps
from tests.simulations.actor_probe import probe_client


def test_the_actor_module_leaves_flowers_simulation_package_unimported() -> None:
    code = ("import sys, simulations.actor; print(sorted(m for m in sys.modules "
            "if m in ('flwr.simulation', 'fastapi') or m.startswith(('flwr.simulation.', "
            "'fastapi.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_clients_run_in_actors_without_it_and_their_errors_reach_the_server() -> None:
    replies: list[Message] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = wait_for_nodes(grid, 2, timeout=120)  # registered as the engine starts
        messages = [Message(RecordDict({"config": ConfigRecord({"fail": node == nodes[0]})}),
                            dst_node_id=node, message_type="train") for node in nodes]
        replies.extend(sorted(send_and_receive(grid, messages),
                              key=lambda m: m.metadata.src_node_id != nodes[0]))

    run_apps(server, probe_client, 2)
    failed, answered = replies
    assert failed.has_error()
    assert failed.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "the probe was asked to fail" in failed.error.reason
    assert not answered.has_error()
    assert answered.content["imports"]["flwr-simulation"] is False
