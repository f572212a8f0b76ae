"""The report's JSON Schema (``report.schema.json``, draft 2020-12), shipped with the package."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "report.schema.json"


@cache
def report_schema() -> dict[str, Any]:
    """The JSON Schema that every report.json (and the API's report.json) validates against."""
    return json.loads(resources.files("privacy.report").joinpath(SCHEMA_FILE).read_text("utf-8"))
