"""The report as a PDF, drawn with matplotlib alone (``PdfPages``): no browser, no
system libraries, the same fonts everywhere. Text pages are laid out line by line on A4;
each plot gets its own page."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from privacy.report.plots import report_figures
from privacy.report.tables import epsilon_grid, num, round_numbers, within_budget_text

A4 = (8.27, 11.69)
MARGIN = 0.6  # inches
BODY_PT = 8.5
LINE = 1.45  # line height, in font sizes
WRAP = 100  # characters per body line


class _Pages:
    """A cursor over A4 pages of text: headings, wrapped paragraphs, monospace tables."""

    def __init__(self, pdf: PdfPages) -> None:
        self._pdf = pdf
        self._figure: Figure | None = None
        self._y = 0.0

    def _page(self) -> Figure:
        if self._figure is None:
            self._figure = Figure(figsize=A4)
            self._y = A4[1] - MARGIN
        return self._figure

    def _line(self, text: str, size: float, **style: Any) -> None:
        height = size * LINE / 72
        if self._figure is not None and self._y - height < MARGIN:
            self.flush()
        figure = self._page()
        figure.text(MARGIN / A4[0], self._y / A4[1], text, fontsize=size, va="top", ha="left",
                    parse_math=False, **style)
        self._y -= height

    def flush(self) -> None:
        if self._figure is not None:
            self._pdf.savefig(self._figure)
            self._figure = None

    def heading(self, text: str, size: float = 12.0) -> None:
        self._y -= 0.12 if self._figure is not None else 0.0
        self._line(text, size, weight="bold")

    def paragraph(self, text: str, indent: str = "") -> None:
        for line in textwrap.wrap(text, WRAP - len(indent), initial_indent=indent,
                                  subsequent_indent=" " * len(indent)) or [""]:
            self._line(line, BODY_PT)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
        for i, row in enumerate([header, *rows]):
            self._line("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)), BODY_PT - 1,
                       family="monospace", weight="bold" if i == 0 else "normal")

    def figure(self, figure: Figure) -> None:
        self.flush()
        self._pdf.savefig(figure)


def _integrity(pages: _Pages, report: Mapping[str, Any]) -> None:
    li = report["ledger_integrity"]
    pages.heading("Ledger integrity")
    verdict = {"verified": f"INTACT: every hash chain and signature verified ({li['key_source']}).",
               "absent": f"NO LEDGER: {li['first_problem']}"}.get(li["status"], f"NOT INTACT: {li['first_problem']}")
    pages.paragraph(verdict)
    if li["checks"]:
        pages.table(["ledger file", "kept by", "entries", "result"],
                    [[c["file"], c["client_id"] or "coordinator", str(c["entries"]),
                      "verified" if c["ok"] else "FAILED"] for c in li["checks"]])
    for problem in li["problems"]:
        pages.paragraph(problem, "- ")


def _clients(pages: _Pages, report: Mapping[str, Any]) -> None:
    pages.heading("Privacy spent per client")
    clients = report["clients"]
    pages.table(
        ["client", "budget eps", "eps spent", "delta", "within", "accountant", "rounds", "declined", "budget from"],
        [[c["client_id"], num(c["budget"]["epsilon"], 4) if c["budget"]["epsilon"] is not None else "none",
          num(c["epsilon_final"], 4), num(c["delta"]), within_budget_text(c["within_budget"]),
          c["accountant"] or "n/a", str(c["rounds_trained"]),
          ",".join(map(str, c["declined_rounds"])) or "none", c["budget"]["source"]] for c in clients],
    )
    pages.paragraph("")
    pages.paragraph("Mechanism: Poisson-subsampled Gaussian (DP-SGD), per client:")
    pages.table(
        ["client", "noise multiplier", "clipping norm", "sample rate", "steps", "records"],
        [[c["client_id"], num(c["mechanism"]["noise_multiplier"], 4), num(c["mechanism"]["clipping_norm"]),
          num(c["mechanism"]["sample_rate"], 4), str(c["mechanism"]["steps"]),
          num(c["mechanism"]["dataset_size"])] for c in clients],
    )
    pages.paragraph("")
    pages.paragraph("Cumulative epsilon after each round:")
    grid = epsilon_grid(report)
    numbers = round_numbers(report)
    pages.table(["client", *[f"r{n}" for n in numbers]],
                [[c, *[cells.get(n, "") for n in numbers]] for c, cells in grid.items()])


def _secure_aggregation(pages: _Pages, report: Mapping[str, Any]) -> None:
    sa = report["secure_aggregation"]
    pages.heading("Secure aggregation")
    if not sa["enabled"]:
        pages.paragraph("Off: the coordinator received each client's update in the clear (protected by DP only).")
        return
    pages.paragraph("On: the coordinator received only the sum of the clients' updates.")
    for key, value in (sa["parameters"] or {}).items():
        pages.paragraph(f"{key}: {value}", "- ")
    if sa["rounds"]:
        pages.table(["round", "cohort", "threshold", "neighbours", "contributors", "dropouts", "aborted"],
                    [[str(r["round"]), str(r["cohort"]), str(r["threshold"]), str(r["neighbours"]),
                      str(r["contributors"]),
                      "; ".join(f"{s}: {','.join(w)}" for s, w in r["dropouts"].items()) or "none",
                      r["aborted"] or "no"] for r in sa["rounds"]])


def render_pdf(report: Mapping[str, Any]) -> bytes:
    """The PDF of ``report`` (a dict from :func:`privacy.report.model.build_report`)."""
    buffer = io.BytesIO()
    run = report["run"]
    metadata = {"Title": f"Privacy report: {run['run_id']}", "Creator": "fedshield"}
    with PdfPages(buffer, metadata=metadata) as pdf:
        pages = _Pages(pdf)
        pages.heading("Privacy audit report", 16)
        pages.paragraph(f"Run {run['run_id']} - scenario {run['scenario']} - report schema "
                        f"{report['schema_version']} - generated {report['generated_at']}")
        pages.paragraph(f"{run['rounds_completed']} of {run['rounds_planned']} rounds, {run['clients']} clients; "
                        f"{run['stop_reason']}; final test accuracy {num(run['accuracy'], 4)}.")
        _integrity(pages, report)
        pages.heading("Unit of privacy and trust model")
        pages.paragraph(f"Unit of privacy: {report['unit_of_privacy']['unit']} level. "
                        f"{report['unit_of_privacy']['description']}")
        pages.paragraph(report["trust_model"]["summary"])
        for party in report["trust_model"]["parties"]:
            pages.paragraph(f"{party['party']} ({party['assumed']}): {party['protection']}", "- ")
        acc = report["accounting"]
        pages.paragraph(f"Accounting: {acc['mechanism']}, accountant {acc['accountant'] or 'n/a'}, "
                        f"delta {num(acc['delta'])}; {acc['rounding']}.")
        _clients(pages, report)
        if report["client_level"]:
            cl = report["client_level"]
            pages.heading("Client-level privacy (reported separately)")
            pages.paragraph(f"Unit: {cl['description']}. Epsilon {num(cl['epsilon'], 4)} at delta "
                            f"{num(cl['delta'])} ({cl['accountant']}).")
        _secure_aggregation(pages, report)
        pages.heading("What was published in the clear")
        for item in report["published_in_clear"]:
            pages.paragraph(f"{item['item']} - to {item['to']}: {item['why']}", "- ")
        for figure in report_figures(report).values():
            pages.figure(figure)
        pages.flush()
    return buffer.getvalue()
