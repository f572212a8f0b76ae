"""Audit reports of a run (Flower-free): the report model, ledger integrity, rendering.

Modules (imported one by one, so that reading a run's layout stays light):

* :mod:`.layout`: where a run's files are (``summary.json``, ``ledger.sqlite``, ``ledgers/``);
* :mod:`.integrity`: :func:`~.integrity.verify_run`, every ledger of a run verified and
  cross-checked, naming the first bad entry;
* :mod:`.model`: :func:`~.model.build_report`, the report as a dict;
  :mod:`.schema`: its JSON Schema (``report.schema.json``, versioned);
* :mod:`.plots`, :mod:`.html`, :mod:`.pdf`: the renderings; :mod:`.writer`:
  :func:`~.writer.write_report` writes report.json, report.html and report.pdf.
"""
