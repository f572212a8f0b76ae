"""Write a run's report next to its results: report.json, report.html, report.pdf."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from privacy.report.html import render_html
from privacy.report.layout import REPORT_FILES
from privacy.report.model import build_report
from privacy.report.pdf import render_pdf


def report_json(report: dict[str, Any]) -> str:
    """The report as JSON text (strict: NaN and infinity never appear)."""
    return json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(results_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Build the report of the run in ``results_dir`` and write its three formats to
    ``out_dir`` (default: the results directory). Returns format -> path."""
    report = build_report(results_dir)
    out_dir = out_dir or results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = {
        "json": report_json(report).encode("utf-8"),
        "html": render_html(report).encode("utf-8"),
        "pdf": render_pdf(report),
    }
    paths = {}
    for kind, data in rendered.items():
        paths[kind] = out_dir / REPORT_FILES[kind]
        _write_atomically(paths[kind], data)
    return paths
