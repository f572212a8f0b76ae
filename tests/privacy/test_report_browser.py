"""The HTML report in a real browser: headless Chromium renders its plots and tables with
no console error and no failed load, and the test writes a screenshot.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it). Without it the
test is skipped, except in CI (``CI=true``), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from privacy.report.writer import write_report
from tests.audit_fixtures import make_run
from tests.browser import find_chromium, visit

PROBE = """(() => {
  const images = [...document.images];
  return {
    images: images.length,
    decoded: images.filter(i => i.complete && i.naturalWidth > 300 && i.naturalHeight > 150).length,
    tables: document.querySelectorAll('table').length,
    clientRows: document.querySelectorAll('#clients table:first-of-type tbody tr').length,
    external: [...document.querySelectorAll('[src],[href]')]
      .map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
    heading: document.querySelector('h1').textContent,
    width: document.documentElement.scrollWidth,
  };
})()"""


@pytest.fixture(scope="module")
def browser() -> str:
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is required in CI (apt-get install -y chromium); .ci/run installs it")
        pytest.skip("Chromium not found (apt-get install -y chromium); the browser test needs it")
    return executable


def test_the_html_report_renders_plots_and_tables_without_errors(browser: str, tmp_path: Path):
    report = write_report(make_run(tmp_path / "runs"), tmp_path / "report")
    screenshot = tmp_path / "report.png"
    page = visit(browser, report["html"].as_uri(), PROBE, screenshot, tmp_path / "profile")

    assert page.errors == []
    assert page.facts["heading"] == "Privacy audit report"
    assert page.facts["images"] == page.facts["decoded"] == 2
    assert page.facts["tables"] >= 6 and page.facts["clientRows"] == 3
    assert page.facts["external"] == []
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 50_000
    if os.environ.get("FEDSHIELD_SCREENSHOT_DIR"):
        shutil.copy(screenshot, Path(os.environ["FEDSHIELD_SCREENSHOT_DIR"]) / "report.png")
