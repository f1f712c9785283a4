"""The Python API for CI frameworks that drive vhostlm: read, check and re-render results.

Everything here is stable across minor versions; the rest of the package is internal.
"""

from __future__ import annotations

from vhostlm.errors import UsageError
from vhostlm.report.figures import FigureRow, figure_rows
from vhostlm.report.html import render_report_files
from vhostlm.report.junit import write_junit
from vhostlm.report.results import (
    VERDICTS,
    CaseResult,
    MigrationFigures,
    RunResult,
    StepResult,
    TrafficFigures,
    Verdict,
    load_results,
    results_schema,
    validate_results,
    write_results,
)
from vhostlm.report.summary import render_summary

__all__ = [
    "VERDICTS",
    "CaseResult",
    "FigureRow",
    "MigrationFigures",
    "RunResult",
    "StepResult",
    "TrafficFigures",
    "UsageError",
    "Verdict",
    "figure_rows",
    "load_results",
    "render_report_files",
    "render_summary",
    "results_schema",
    "validate_results",
    "write_junit",
    "write_results",
]
