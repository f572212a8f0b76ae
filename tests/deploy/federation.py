"""A real Flower deployment as separate processes: the topology of docker/compose.yml
without Docker (no engine on these machines).

One ``flower-superlink`` with TLS, SuperNode authentication and process isolation, a
``flower-superexec`` running the ServerApp (authenticated by the SuperExec secret), and
``flower-supernode`` processes each with its own data folder (``fedshield partition``) and
key (``fedshield certs``), and the ``flwr`` CLI as the operator: the services and flags of
``docker/compose.yml``. Where the test runs as root with
``ip netns`` available, every party gets its own network namespace on a private bridge
with no uplink, so each SuperNode really is a separate host: it reaches the SuperLink
over a veth link and sees no other party's loopback. Elsewhere everything listens on
127.0.0.1 with random free ports.

Every process started here (and each one's descendants: SuperExec, ServerApp and
ClientApp processes) is killed by :meth:`Processes.close`; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.cli_runner import fedshield as run_fedshield

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
CONNECTION = "fedshield-test"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.5):
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Processes:
    """The processes a test started; each is killed with its whole process tree."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []
        self._trees: dict[int, list[psutil.Process]] = {}

    def start(self, name: str, args: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            list(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=REPO, start_new_session=True,
        )
        log.close()
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tree(self, proc: subprocess.Popen) -> list[psutil.Process]:
        """``proc`` and its descendants, remembered so that orphans are found later."""
        known = self._trees.setdefault(proc.pid, [])
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                if all(p.pid != k.pid for k in known):
                    known.append(p)
        except psutil.NoSuchProcess:
            pass
        return known

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL, grace: float = 5.0) -> None:
        """Send ``sig`` to ``proc`` and its descendants; SIGKILL what is left after ``grace``."""
        members = self.tree(proc)
        for p in members:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(members, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=grace)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        for proc in reversed(self.started):
            self.kill(proc, signal.SIGTERM, grace=3.0)


class Network:
    """Where the parties run: 127.0.0.1, or one network namespace per party."""

    def __init__(self) -> None:
        self.namespaces: dict[str, str] = {}  # party -> namespace
        self.addresses: dict[str, str] = {}  # party -> IP address
        self.bridge: str | None = None
        self.isolated = False

    def prefix(self, party: str) -> list[str]:
        ns = self.namespaces.get(party)
        return ["ip", "netns", "exec", ns] if ns else []

    def address(self, party: str) -> str:
        return self.addresses.get(party, "127.0.0.1")

    def close(self) -> None:
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
        self.namespaces.clear()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def isolated_network(parties: Sequence[str]) -> Network:
    """A namespace per party on a private bridge (no uplink, no address in the host's
    namespace). Raises OSError/CalledProcessError where namespaces are unavailable."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise OSError("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    net = Network()
    try:
        net.bridge = f"fsb{tag}"
        _ip("link", "add", net.bridge, "type", "bridge")
        _ip("link", "set", net.bridge, "up")
        for i, party in enumerate(parties):
            ns, host_end, ns_end = f"fs{tag}-{party}", f"fh{tag}{i}", f"fn{tag}{i}"
            _ip("netns", "add", ns)
            net.namespaces[party] = ns
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", ns)
            _ip("link", "set", host_end, "master", net.bridge)
            _ip("link", "set", host_end, "up")
            address = f"{subnet}.{10 + i}"
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            net.addresses[party] = address
        net.isolated = True
        return net
    except BaseException:
        net.close()
        raise


@dataclass
class Federation:
    """A SuperLink, its SuperNodes and an operator's ``flwr`` configuration."""

    root: Path
    certs: Path
    partitions: Path
    network: Network
    processes: Processes
    port: int = 0
    superlink: subprocess.Popen | None = None
    supernodes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.network.address('superlink')}:{self.port}"

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("FLWR_", "PYTEST", "RAY_"))
        }
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            FLWR_HOME=str(self.flwr_home),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            OMP_NUM_THREADS="1",  # one core per party, as one container per host would have
            MKL_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
            COLUMNS="200",
        )
        return env

    def write_flwr_config(self) -> None:
        """The operator's connection to this SuperLink (``~/.flwr/config.toml``)."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{self.address}"\n'
            f'root-certificates = "{(self.certs / "ca.crt").resolve()}"\n'
        )

    def start_superlink(self, timeout: float = 90.0) -> None:
        host = self.network.address("superlink")
        self.port = free_port() if not self.network.isolated else 9443
        self.write_flwr_config()
        state = self.root / "state"
        state.mkdir(exist_ok=True)
        self.superlink = self.processes.start(
            "superlink",
            [*self.network.prefix("superlink"), str(BIN / "flower-superlink"),
             "--host", host, "--port", str(self.port),
             "--ssl-ca-certfile", str(self.certs / "ca.crt"),
             "--ssl-certfile", str(self.certs / "superlink.pem"),
             "--ssl-keyfile", str(self.certs / "superlink.key"),
             "--enable-supernode-auth",
             "--database", str(state / "superlink.db"),
             "--isolation", "process",
             "--superexec-auth-secret-file", str(self.certs / "superexec.secret"),
             "--disable-runtime-dependency-installation"],
            self.env(),
        )
        wait_for(lambda: "Uvicorn running on https" in self.processes.log("superlink")
                 or self.superlink.poll() is not None, timeout, "the SuperLink to listen")
        assert self.superlink.poll() is None, self.processes.log("superlink")[-3000:]

    def start_serverapp_runner(self) -> None:
        """The ServerApp runner (compose service ``serverapp``): a SuperExec that takes
        the SuperLink's ServerApp tasks over TLS, authenticated by the shared secret."""
        self.processes.start(
            "serverapp",
            [*self.network.prefix("serverapp"), str(BIN / "flower-superexec"),
             "--runtime-api-address", self.address,
             "--root-certificates", str(self.certs / "ca.crt"),
             "--superexec-auth-secret-file", str(self.certs / "superexec.secret")],
            self.env(),
        )

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """The ``flwr`` CLI, run by the operator (its own host in the isolated network)."""
        return subprocess.run(
            [*self.network.prefix("operator"), str(BIN / "flwr"), *args],
            capture_output=True, text=True, env=self.env(), cwd=REPO, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def register(self, name: str) -> None:
        result = self.flwr("supernode", "register", str(self.certs / "nodes" / f"{name}.pub"),
                           CONNECTION, "--name", name)
        assert result.returncode == 0 and "registered successfully" in result.stdout, (
            result.stdout + result.stderr
        )

    def nodes(self) -> list[dict]:
        """The SuperLink's SuperNodes as ``flwr supernode list --format json`` reports them."""
        result = self.flwr("supernode", "list", CONNECTION, "--format", "json", timeout=60)
        if result.returncode != 0:
            return []
        start = result.stdout.find("{")
        return json.loads(result.stdout[start:]).get("nodes", []) if start >= 0 else []

    def online(self) -> int:
        return sum(1 for n in self.nodes() if n.get("status") == "online")

    def start_supernode(
        self,
        name: str,
        data: Path,
        key: Path | None = None,
        root_ca: Path | None = None,
        insecure: bool = False,
        party: str | None = None,
        max_retries: int | None = None,
    ) -> subprocess.Popen:
        """``flower-supernode`` for client ``name`` with its data folder and key."""
        party = party or name
        tls = ["--insecure"] if insecure else [
            "--root-certificates", str(root_ca or self.certs / "ca.crt"),
            "--auth-supernode-private-key", str(key or self.certs / "nodes" / f"{name}.key"),
        ]
        runtime_port = 9094 if self.network.isolated else free_port()
        retries = ["--max-retries", str(max_retries), "--max-wait-time", "20"] if (
            max_retries is not None) else []
        proc = self.processes.start(
            party,
            [*self.network.prefix(party), str(BIN / "flower-supernode"),
             "--superlink", self.address, *tls, *retries,
             "--node-config", f"data-path='{data}' client-id='{name}'",
             "--host", "127.0.0.1", "--port", str(runtime_port)],
            self.env(),
        )
        self.supernodes[party] = proc
        return proc

    def submit(self, run_config: dict[str, object]) -> str:
        """``flwr run . <connection>`` with ``run_config``; returns the run id."""
        items = " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())
        result = self.flwr("run", ".", CONNECTION, "--run-config", items, "--format", "json",
                           timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        start = result.stdout.find("{")
        reply = json.loads(result.stdout[start:])
        assert reply.get("success"), reply
        return str(reply["run-id"])

    def run_status(self, run_id: str) -> str:
        result = self.flwr("list", CONNECTION, "--run-id", run_id, "--format", "json", timeout=60)
        start = result.stdout.find("{")
        if result.returncode != 0 or start < 0:
            return ""
        runs = json.loads(result.stdout[start:]).get("runs", [])
        return str(runs[0].get("status", "")) if runs else ""


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value + "'"
    return repr(value)


def start_federation(
    root: Path,
    clients: Sequence[str],
    network: Network,
    processes: Processes,
    unregistered: Sequence[str] = (),
    seed: int | None = None,
    timeout: float = 120.0,
) -> Federation:
    """Certificates and keys (also for the ``unregistered`` names, never registered), one
    partition folder per client, the SuperLink, the ServerApp runner, and every client's
    SuperNode registered and online; every process started under ``processes``."""
    federation = Federation(root, root / "certs", root / "partitions", network, processes)
    fedshield("certs", "--out", str(federation.certs), "--clients", str(len(clients)),
              *(arg for name in unregistered for arg in ("--name", name)),
              "--san", network.address("superlink"), timeout=600)
    fedshield("partition", "--scenario", "digits", "--clients", str(len(clients)),
              *(("--seed", str(seed)) if seed is not None else ()),
              "--out", str(federation.partitions), timeout=600)
    federation.start_superlink()
    federation.start_serverapp_runner()
    for name in clients:
        federation.register(name)
    for name in clients:
        federation.start_supernode(name, federation.partitions / name)
    wait_for(lambda: federation.online() == len(clients), timeout,
             f"{len(clients)} SuperNodes online")
    return federation


def fedshield(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """``fedshield ARGS`` in the repository; RuntimeError with its output if it fails."""
    result = run_fedshield(*args, cwd=REPO, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"fedshield {args[0]} failed: {result.stdout}{result.stderr}")
    return result


def read_summary(out_dir: Path) -> dict | None:
    """The run's summary.json under ``out_dir`` once the ServerApp has written it."""
    found = sorted(out_dir.glob("*/summary.json"))
    return json.loads(found[-1].read_text()) if found else None


def rounds_done(out_dir: Path) -> int:
    """Rounds recorded so far in the run's rounds.csv under ``out_dir``."""
    found = sorted(out_dir.glob("*/rounds.csv"))
    return max(0, len(found[-1].read_text().strip().splitlines()) - 1) if found else 0
