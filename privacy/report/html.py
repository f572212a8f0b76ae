"""The report as one self-contained HTML page: inline CSS, plots as base64 PNG data URIs,
no scripts and no external resource of any kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from privacy.report.plots import png_base64, report_figures
from privacy.report.tables import epsilon_grid, num, round_numbers, within_budget_text

_environment = Environment(
    loader=PackageLoader("privacy.report", "templates"),
    autoescape=select_autoescape(("html", "j2")),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters["num"] = num
_environment.filters["budget_verdict"] = within_budget_text


def render_html(report: Mapping[str, Any]) -> str:
    """The HTML page of ``report`` (a dict from :func:`privacy.report.model.build_report`)."""
    plots = {name: png_base64(figure) for name, figure in report_figures(report).items()}
    return _environment.get_template("report.html.j2").render(
        r=report, plots=plots, round_numbers=round_numbers(report),
        status_by_round=epsilon_grid(report),
    )
