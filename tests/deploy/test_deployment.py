"""The deployed topology, run as real processes: TLS, node authentication, a DP run.

One SuperLink (TLS, ``--enable-supernode-auth``, state in SQLite), three registered
SuperNodes each with only its own partition folder and key, and ``flwr run .`` of this
app against them, compared with a simulation of the same data and seed. Then what must
be refused is refused, and a SuperNode killed mid-run does not stop the run.

Runs each party in its own network namespace where the test is root (see
``tests/deploy/federation.py``); elsewhere, or with ``FEDSHIELD_TEST_NETNS=0``, on
127.0.0.1 with random free ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.federation import (
    BIN,
    Federation,
    Network,
    Processes,
    fedshield,
    isolated_network,
    read_summary,
    rounds_done,
    start_federation,
    wait_for,
)

pytestmark = pytest.mark.slow

CLIENTS = ["client-0", "client-1", "client-2"]
PARTIES = ["superlink", "serverapp", "operator", *CLIENTS, "rogue", "foreign", "plain",
           "rogue-exec"]
# The simulation test's settings (tests/test_simulation.py): digits, 3 clients, DP.
RUN = {"scenario": "digits", "num-server-rounds": 2, "local-epochs": 2,
       "target-epsilon": 8.0, "seed": 42, "dp": True}
# DP noise and Poisson samples are fresh in every run (os.urandom), and after 2 rounds the
# digits LeNet is still on the steep part of its curve: repeated runs of either engine
# here have ended anywhere between 0.45 and 0.75. The check is that deployment learns as
# the simulation does, not that two noisy runs agree to the point.
ACCURACY_TOLERANCE = 0.30
NODE_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("deploy")
    (root / "logs").mkdir()
    try:
        if os.environ.get("FEDSHIELD_TEST_NETNS") == "0":
            raise OSError("FEDSHIELD_TEST_NETNS=0")
        network = isolated_network(PARTIES)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"network namespaces unavailable ({error}); every party on 127.0.0.1")
        network = Network()
    processes = Processes(root / "logs")
    try:
        # rogue's key exists but is never registered
        fed = start_federation(root, CLIENTS, network, processes, unregistered=["rogue"],
                               seed=RUN["seed"], timeout=NODE_TIMEOUT)
        yield fed
    finally:
        processes.close()
        network.close()


def _refused(fed: Federation, party: str, proc: subprocess.Popen) -> str:
    """Wait for a SuperNode that must be refused to give up; return its log."""
    try:
        proc.wait(timeout=NODE_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{party} was not refused: {fed.processes.log(party)[-2000:]}")
    assert proc.returncode != 0
    return fed.processes.log(party)


def test_every_supernode_is_registered_and_online(federation: Federation):
    nodes = federation.nodes()
    assert sorted(n["status"] for n in nodes) == ["online"] * 3
    assert "Uvicorn running on https://" in federation.processes.log("superlink")


def test_an_unregistered_supernode_is_refused(federation: Federation):
    proc = federation.start_supernode("rogue", federation.partitions / "client-0",
                                      max_retries=1)
    log = _refused(federation, "rogue", proc)
    assert "Failed to activate SuperNode" in log
    assert "No SuperNode found with the given public key" in federation.processes.log("superlink")
    assert federation.online() == 3


def test_a_supernode_trusting_another_ca_is_refused(federation: Federation, tmp_path: Path):
    """A SuperNode whose root certificate is another authority's does not accept our
    SuperLink's certificate (and a SuperLink with a certificate from another CA is refused
    by our SuperNodes for the same reason). Its key is registered: only TLS refuses it."""
    fedshield("certs", "--out", str(tmp_path / "foreign"), "--san",
              federation.network.address("superlink"))
    proc = federation.start_supernode(
        "client-0", federation.partitions / "client-0", root_ca=tmp_path / "foreign" / "ca.crt",
        party="foreign", max_retries=1,
    )
    log = _refused(federation, "foreign", proc)
    assert "CERTIFICATE_VERIFY_FAILED" in log


def test_plaintext_to_the_tls_port_fails(federation: Federation):
    proc = federation.start_supernode("client-1", federation.partitions / "client-1",
                                      insecure=True, party="plain", max_retries=1)
    _refused(federation, "plain", proc)
    probe = (
        "import httpx, sys\n"
        "url = sys.argv[1]\n"
        "try:\n"
        "    httpx.get('http://' + url + '/health', timeout=10)\n"
        "    print('plaintext answered')\n"
        "except httpx.HTTPError as error:\n"
        "    print('plaintext failed:', type(error).__name__)\n"
        "ok = httpx.get('https://' + url + '/health', timeout=10, verify=sys.argv[2])\n"
        "print('tls', ok.status_code)\n"
    )
    result = subprocess.run(
        [*federation.network.prefix("operator"), sys.executable, "-c", probe,
         federation.address, str(federation.certs / "ca.crt")],
        capture_output=True, text=True, timeout=60,
    )
    assert "plaintext failed" in result.stdout, result.stdout + result.stderr
    assert "tls 200" in result.stdout, result.stdout + result.stderr


def test_a_serverapp_runner_without_the_secret_is_refused(federation: Federation,
                                                          tmp_path: Path):
    """The Runtime API shares the TLS port: a SuperExec that does not hold
    superexec.secret cannot take the ServerApp's tasks."""
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(b"not-the-federation-secret")
    proc = federation.processes.start(
        "rogue-exec",
        [*federation.network.prefix("rogue-exec"), str(BIN / "flower-superexec"),
         "--runtime-api-address", federation.address,
         "--root-certificates", str(federation.certs / "ca.crt"),
         "--superexec-auth-secret-file", str(wrong)],
        federation.env(),
    )
    try:
        wait_for(lambda: "SuperExec authentication failed" in federation.processes.log("superlink"),
                 NODE_TIMEOUT, "the SuperLink to refuse the rogue SuperExec")
    finally:
        federation.processes.kill(proc)


def test_deployed_dp_run_matches_the_simulation(federation: Federation):
    """DP-SGD on every client and, as configured by default, secure aggregation."""
    out = federation.root / "runs"
    run_id = federation.submit({**RUN, "out-dir": str(out)})
    summary = wait_for(lambda: read_summary(out), 600, f"run {run_id} to finish", every=2)
    assert summary["rounds_completed"] == 2 and summary["clients"] == 3
    assert summary["dp"] and 0 < summary["epsilon_max"] <= RUN["target-epsilon"]
    assert summary["secure_aggregation"] is True
    assert sorted(summary["client_epsilon"]) == CLIENTS  # names from the node config
    assert all(r["trained"] == 3 for r in summary["rounds"])
    wait_for(lambda: federation.run_status(run_id) == "finished:completed", 60,
             f"run {run_id} to be reported completed")

    simulated = json.loads(fedshield(
        "simulate", "--scenario", "digits", "--clients", "3", "--rounds", "2",
        "--target-epsilon", "8", "--seed", str(RUN["seed"]), "--set", "local-epochs=2",
        "--out", str(federation.root / "simulated"), "--json", timeout=600,
    ).stdout)
    same = ("scenario", "num-server-rounds", "local-epochs", "target-epsilon", "seed", "dp",
            "partitioning", "secure-aggregation", "batch-size", "learning-rate")
    assert {k: summary["config"][k] for k in same} == {k: simulated["config"][k] for k in same}
    assert abs(summary["accuracy"] - simulated["accuracy"]) <= ACCURACY_TOLERANCE, (
        summary["accuracy"], simulated["accuracy"])
    assert summary["accuracy"] > 0.1 + 0.15  # well above chance, as the simulation test asks


def test_a_supernode_killed_mid_run_leaves_the_run_going(federation: Federation):
    """Runs last: kills client-2 (its SuperNode and everything under it, as when its
    container dies) once round 1 is recorded. The SuperLink declares it offline when its
    heartbeats stop (at most 2 x 30 s) and answers for it with an error, which secure
    aggregation treats as a dropout: the sum of the two others is unmasked (threshold 2
    of 3) and the run goes on to its last round. round-timeout is only the safety net."""
    out = federation.root / "runs-kill"
    federation.submit({**RUN, "local-epochs": 1, "round-timeout": 150.0, "out-dir": str(out)})
    wait_for(lambda: rounds_done(out) >= 1, 600, "round 1 of the run", every=1)
    federation.processes.kill(federation.supernodes["client-2"])
    summary = wait_for(lambda: read_summary(out), 600, "the run to finish", every=2)
    assert summary["rounds_completed"] == 2
    first, second = summary["rounds"]
    assert first["trained"] == 3
    assert second["trained"] == 2 and second["failed"] >= 1, second
    secure = summary["secure_aggregation_rounds"][1]  # unmasked without the dropout
    assert secure["aborted"] is None and secure["contributors"] == 2, secure
    assert summary["accuracy"] > 0.1
