"""The audit API against a real uvicorn on 127.0.0.1: authentication, roles, every read
endpoint, and a schemathesis run over its OpenAPI spec."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import pytest

from privacy.report.schema import report_schema
from tests.audit_fixtures import RUN_ID, make_run

ROOT = Path(__file__).parents[2]
FEDSHIELD = [sys.executable, "-m", "fedshield.cli"]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
REPORT_SCHEMA = report_schema()
READ_PATHS = [
    "/runs", f"/runs/{RUN_ID}", f"/runs/{RUN_ID}/clients", f"/runs/{RUN_ID}/clients/client-0",
    f"/runs/{RUN_ID}/ledger/verify", f"/runs/{RUN_ID}/report.json", f"/runs/{RUN_ID}/report.html",
    f"/runs/{RUN_ID}/report.pdf",
]


@dataclass
class Service:
    url: str
    admin: str
    auditor: str
    token_db: Path
    runs_dir: Path

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_token(runs_dir: Path, token_db: Path, role: str) -> str:
    result = subprocess.run(
        [*FEDSHIELD, "audit", "token", "create", "--role", role, "--label", f"test {role}",
         "--runs-dir", str(runs_dir), "--token-db", str(token_db)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    (token,) = result.stdout.split()  # stdout holds the token and nothing else
    assert "shown only now" in result.stderr
    return token


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    runs_dir = tmp_path_factory.mktemp("runs")
    make_run(runs_dir)
    token_db = runs_dir.parent / "tokens.sqlite"
    admin, auditor = (create_token(runs_dir, token_db, role) for role in ("admin", "auditor"))
    port = free_port()
    log = open(runs_dir.parent / "server.log", "w")
    process = subprocess.Popen(
        [*FEDSHIELD, "audit", "serve", "--runs-dir", str(runs_dir), "--token-db", str(token_db),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the audit server did not start: {(runs_dir.parent / 'server.log').read_text()}")
            time.sleep(0.3)
        yield Service(url, admin, auditor, token_db, runs_dir)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.mark.parametrize("path", READ_PATHS + ["/tokens"])
def test_no_token_or_a_bad_one_is_401(service: Service, path: str):
    missing = service.get(path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert service.get(path, service.auditor[:-1] + "x").status_code == 401
    assert service.get(path, "not-a-token").status_code == 401


def test_an_auditor_may_not_manage_tokens(service: Service):
    headers = {"Authorization": f"Bearer {service.auditor}"}
    assert service.get("/tokens", service.auditor).status_code == 403
    created = httpx.post(service.url + "/tokens", json={"role": "admin"}, headers=headers)
    assert created.status_code == 403
    token_id = service.admin.split(".")[0]
    assert httpx.delete(f"{service.url}/tokens/{token_id}", headers=headers).status_code == 403


def ledger_digests(runs_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(runs_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(runs_dir.rglob("*.sqlite"))}


def test_every_read_endpoint_returns_the_data_and_writes_no_ledger(service: Service):
    before = ledger_digests(service.runs_dir)
    for token in (service.auditor, service.admin):
        runs = service.get("/runs", token).json()
        assert [r["run_id"] for r in runs] == [RUN_ID] and runs[0]["has_ledger"]
    summary = service.get(f"/runs/{RUN_ID}", service.auditor).json()
    assert summary["rounds_completed"] == 2 and summary["rounds"][1]["val_accuracy"] is None  # NaN
    clients = service.get(f"/runs/{RUN_ID}/clients", service.auditor).json()
    assert {c["client_id"]: c["epsilon_final"] for c in clients} == {
        "client-0": 0.8805, "client-1": 1.2209, "client-2": 1.2209}
    zero = service.get(f"/runs/{RUN_ID}/clients/client-0", service.auditor).json()
    assert zero["budget"]["epsilon"] == 1.0 and zero["declined_rounds"] == [2]
    verified = service.get(f"/runs/{RUN_ID}/ledger/verify", service.auditor).json()
    assert verified["status"] == "verified" and len(verified["checks"]) == 4
    report = service.get(f"/runs/{RUN_ID}/report.json", service.auditor).json()
    jsonschema.validate(report, REPORT_SCHEMA, cls=jsonschema.Draft202012Validator)
    html = service.get(f"/runs/{RUN_ID}/report.html", service.auditor)
    assert html.headers["content-type"].startswith("text/html") and "Privacy audit report" in html.text
    pdf = service.get(f"/runs/{RUN_ID}/report.pdf", service.auditor)
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert service.get("/runs/no-such-run/clients", service.auditor).status_code == 404
    assert service.get(f"/runs/{RUN_ID}/clients/client-9", service.auditor).status_code == 404
    assert service.get("/docs").status_code == 200
    assert "/runs/{run_id}/ledger/verify" in service.get("/openapi.json").json()["paths"]
    assert service.get("/schemas/report.json").json() == REPORT_SCHEMA
    assert ledger_digests(service.runs_dir) == before and len(before) == 4


def test_an_admin_issues_and_revokes_tokens_stored_only_as_hashes(service: Service):
    headers = {"Authorization": f"Bearer {service.admin}"}
    created = httpx.post(service.url + "/tokens", json={"role": "auditor", "label": "regulator"}, headers=headers)
    assert created.status_code == 201
    token, token_id = created.json()["token"], created.json()["token_id"]
    assert service.get("/runs", token).status_code == 200
    listed = service.get("/tokens", service.admin).json()
    assert {"token_id": token_id, "role": "auditor", "label": "regulator"}.items() <= next(
        t for t in listed if t["token_id"] == token_id).items()
    assert all("token" not in t for t in listed)

    stored = sqlite3.connect(service.token_db).execute("SELECT * FROM audit_tokens").fetchall()
    flat = json.dumps(stored)
    assert token not in flat and token.split(".")[1] not in flat
    assert service.admin not in flat and service.auditor not in flat

    assert httpx.delete(f"{service.url}/tokens/{token_id}", headers=headers).json()["revoked_at"]
    assert service.get("/runs", token).status_code == 401
    assert httpx.delete(f"{service.url}/tokens/{'0' * 12}", headers=headers).status_code == 404


def test_schemathesis_finds_no_server_errors(service: Service, tmp_path: Path):
    """Bounded (3 examples per operation, fixed seed). The path parameters are set to the
    real run and client, so requests reach the data and the report renderers."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\nrun_id = "{RUN_ID}"\nclient_id = "client-0"\n')
    result = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{service.url}/openapi.json",
         "--header", f"Authorization: Bearer {service.admin}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance",
         "--phases", "coverage,fuzzing", "--max-examples", "3", "--seed", "1", "--workers", "1",
         "--generation-database", "none", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"Test cases:\s+\d+ generated, \d+ passed", result.stdout), result.stdout[-4000:]
