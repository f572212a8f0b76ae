"""The audit report: its JSON schema, its contents, its three renderings, and ledger
integrity of a whole run (real SQLite files and signatures, tampered like an attacker would)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest

from privacy.ledger import ClientSigner, PrivacyLedger
from privacy.report.integrity import verify_run
from privacy.report.layout import RunNotFoundError, load_summary, resolve_run
from privacy.report.model import SCHEMA_VERSION, build_report
from privacy.report.schema import report_schema
from privacy.report.writer import write_report
from tests.audit_fixtures import RUN_ID, make_run, swap_rows, tamper

SCHEMA = report_schema()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def run(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the run, free to tamper with."""
    return Path(shutil.copytree(pristine, tmp_path / RUN_ID))


def validate(report: dict) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(report, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_report_has_every_section_and_matches_its_schema(pristine: Path):
    report = build_report(pristine)
    validate(report)
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["unit_of_privacy"]["unit"] == "sample"
    assert "signed" in report["trust_model"]["summary"]
    clients = {c["client_id"]: c for c in report["clients"]}
    assert set(clients) == {"client-0", "client-1", "client-2"}
    zero = clients["client-0"]
    assert zero["budget"] == {"epsilon": 1.0, "delta": 1e-5, "source": "run config client-budgets"}
    assert zero["epsilon_final"] == 0.8805 and zero["within_budget"] is True
    assert zero["declined_rounds"] == [2] and zero["rounds_trained"] == 1
    assert zero["epsilon_source"] == "ledger" and len(zero["charges"]) == 1
    assert zero["mechanism"]["noise_multiplier"] == 2.0 and zero["mechanism"]["dataset_size"] == 431
    assert [p["epsilon"] for p in clients["client-1"]["epsilon_by_round"]] == [0.8805, 1.2209]
    secagg = report["secure_aggregation"]
    assert secagg["enabled"] and secagg["parameters"]["threshold_fraction"] == 0.5
    assert secagg["rounds"][1] | {"dropouts": None} == {
        "round": 2, "cohort": 3, "threshold": 2, "neighbours": 2, "contributors": 2,
        "dropouts": None, "dropout_count": 1, "aborted": None}
    assert any("sum of the updates" in item["item"] for item in report["published_in_clear"])
    assert report["ledger_integrity"]["status"] == "verified"
    assert report["rounds"][1]["accuracy"] == 0.41


def test_a_run_without_secure_aggregation_or_ledger_still_reports(tmp_path: Path):
    results = make_run(tmp_path, secure_aggregation=False)
    summary = load_summary(results)
    for key in ("ledger", "secure_aggregation", "client_level_epsilon"):
        summary.pop(key)
    (results / "summary.json").write_text(json.dumps(summary))
    (results / "ledger.sqlite").unlink()
    shutil.rmtree(results / "ledgers")
    report = build_report(results)
    validate(report)
    assert report["ledger_integrity"]["status"] == "absent"
    assert not report["secure_aggregation"]["enabled"]
    assert any("each client's model update" in i["item"] for i in report["published_in_clear"])
    assert {c["epsilon_source"] for c in report["clients"]} == {"summary"}


def test_write_report_writes_json_html_and_pdf(pristine: Path, tmp_path: Path):
    paths = write_report(pristine, tmp_path)
    validate(json.loads(paths["json"].read_text()))
    html = paths["html"].read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the page must be self-contained"
    assert "http://" not in html and "https://" not in html
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{500,}"', html)) == 2
    assert "<script" not in html
    assert "declined (0.8805)" in html and "Intact" in html
    pdf = paths["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 3


def test_untouched_run_verifies(pristine: Path):
    report = verify_run(pristine, load_summary(pristine))
    assert report.ok, report.problems
    assert [c.file for c in report.checks] == [
        "ledger.sqlite", "ledgers/client-0.sqlite", "ledgers/client-1.sqlite", "ledgers/client-2.sqlite"]


@pytest.mark.parametrize(
    ("file", "attack", "expected"),
    [
        ("ledger.sqlite",
         lambda p: tamper(p, "UPDATE ledger_entries SET epsilon_after = 0.5 WHERE client_id = 'client-1' AND seq = 2"),
         "ledger.sqlite: entry 2 of client-1's ledger (round 2): hash mismatch"),
        ("ledgers/client-2.sqlite",
         lambda p: tamper(p, "DELETE FROM ledger_entries WHERE seq = 1"),
         "ledgers/client-2.sqlite: entry 1 of client-2's ledger: sequence gap: entry 1 missing"),
        ("ledger.sqlite",
         lambda p: swap_rows(p, "client-1", 1, 2),
         "ledger.sqlite: entry 2 of client-1's ledger (round 2): order: entry out of sequence"),
        ("ledgers/client-1.sqlite",
         lambda p: tamper(p, ("UPDATE ledger_entries SET signature = ? WHERE seq = 2", (bytes(64),))),
         "ledgers/client-1.sqlite: entry 2 of client-1's ledger (round 2): signature invalid"),
    ],
    ids=["changed-epsilon", "deleted-row", "reordered-rows", "forged-signature"],
)
def test_tampering_names_the_entry(run: Path, file: str, attack, expected: str):
    attack(run / file)
    report = verify_run(run, load_summary(run))
    assert not report.ok
    assert report.first_problem.startswith(expected), report.first_problem


def test_cutting_the_newest_entry_from_either_copy_is_caught(run: Path):
    tamper(run / "ledger.sqlite", "DELETE FROM ledger_entries WHERE client_id = 'client-2' AND seq = 2")
    problem = verify_run(run, load_summary(run)).first_problem
    assert problem.startswith("ledger.sqlite: entry 2 of client-2's ledger: sequence gap"), problem

    summary = load_summary(run)
    summary["ledger"]["heads"].pop("client-2")  # the coordinator hides it in its summary too
    assert "entry 2 of client-2's ledger" in verify_run(run, summary).first_problem  # the client's own file still has it


def test_a_client_ledger_cut_short_is_caught_by_the_merged_copy(run: Path):
    tamper(run / "ledgers/client-1.sqlite", "DELETE FROM ledger_entries WHERE seq = 2")
    problem = verify_run(run, load_summary(run)).first_problem
    assert problem.startswith("ledgers/client-1.sqlite: entry 2 of client-1's ledger: sequence gap"), problem


def test_a_coordinator_that_re_keys_a_client_and_re_signs_is_caught(run: Path):
    """Replace client-1's key in the merged copy and re-sign its entries: the copy verifies
    on its own, but the key no longer matches the client's own ledger."""
    impostor = ClientSigner.generate()
    forged = run / "forged.sqlite"
    with PrivacyLedger(forged) as ledger:
        for client in ("client-0", "client-2"):
            with PrivacyLedger(run / f"ledgers/{client}.sqlite", read_only=True) as own:
                ledger.merge_from(own)
        ledger.enroll("client-1", impostor.public_key)
        with PrivacyLedger(run / "ledgers/client-1.sqlite", read_only=True) as own:
            for entry in own.entries():
                ledger.append(entry.charge, impostor)
    forged.replace(run / "ledger.sqlite")
    for suffix in ("-wal", "-shm"):
        (run / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
    report = verify_run(run, load_summary(run))
    assert not report.ok
    assert any("client-1's key" in p for p in report.problems), report.problems


def test_trusted_keys_given_out_of_band_override_the_files(run: Path):
    stranger = ClientSigner.generate().public_key_bytes
    with PrivacyLedger(run / "ledger.sqlite", read_only=True) as ledger:
        keys = ledger.public_keys()
    assert verify_run(run, load_summary(run), trusted_keys=keys).ok
    report = verify_run(run, load_summary(run), trusted_keys={**keys, "client-0": stranger})
    assert "client-0" in report.first_problem and "unknown signer" in report.first_problem


def test_a_file_that_is_not_a_ledger_is_named(run: Path):
    (run / "ledgers/client-0.sqlite").write_bytes(b"not a database" * 100)
    report = verify_run(run, load_summary(run))
    assert report.first_problem.startswith("ledgers/client-0.sqlite: cannot read it as a privacy ledger")


def test_runs_resolve_by_path_or_id_and_missing_ones_are_named(pristine: Path, tmp_path: Path):
    assert resolve_run(str(pristine)) == pristine.resolve()
    assert resolve_run(RUN_ID, pristine.parent) == pristine.resolve()
    with pytest.raises(RunNotFoundError, match="run 'nope' not found"):
        resolve_run("nope", tmp_path)
    with pytest.raises(RunNotFoundError, match="has no summary.json"):
        resolve_run(str(tmp_path))


def test_read_only_ledgers_refuse_writes(pristine: Path):
    from privacy.ledger import LedgerError

    with PrivacyLedger(pristine / "ledger.sqlite", read_only=True) as ledger:
        assert len(ledger.entries()) == 5
        with pytest.raises(LedgerError, match="read-only"):
            ledger.enroll("client-9", ClientSigner.generate().public_key)
    with pytest.raises(LedgerError, match="no ledger at"):
        PrivacyLedger(pristine / "absent.sqlite", read_only=True)
    assert not (pristine / "absent.sqlite").exists()


def test_text_from_the_run_is_escaped_in_html_and_plain_in_pdf(pristine: Path):
    from privacy.report.html import render_html
    from privacy.report.pdf import render_pdf

    report = build_report(pristine)
    report["run"]["stop_reason"] = "<script>alert('x')</script> cost $5 $\\alpha$"
    html = render_html(report)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert render_pdf(report).startswith(b"%PDF")
