"""The end-of-run summary: a plain-text table of steps plus each case's key figures.

The last line deliberately avoids the form "N passed, N failed": the CI harness would
take such a line as its own test result.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vhostlm.report.figures import (
    breakdown_text,
    case_breakdowns,
    case_measure,
    mib,
    number,
    seconds_text,
)
from vhostlm.report.results import VERDICTS, CaseResult, RunResult

_HEADERS = ("case", "step", "verdict", "detail")
_COLORS = {"pass": "32", "fail": "31", "error": "1;31", "skip": "33"}
_CI_RESULT_LINE = re.compile(r"^\s*\d+ passed, \d+ failed")
_MAX_DETAIL = 100


def render_summary(result: RunResult, color: bool = False) -> str:
    """Render the table, per-case figures and a result line; ANSI colours only if `color`."""
    rows: list[tuple[str, str, str, str]] = []
    for case in result.cases:
        for step in case.steps:
            rows.append((case.name, step.name, step.verdict.upper(), _one_line(step.detail)))
        if not case.steps:
            rows.append((case.name, "-", case.verdict.upper(), _one_line(case.reason)))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(_HEADERS)]

    def fmt(cells: tuple[str, str, str, str], paint: bool) -> str:
        case, step, verdict, detail = (c.ljust(w) for c, w in zip(cells, widths, strict=True))
        if paint:
            verdict = _paint(cells[2].lower(), verdict)
        return f"{case} | {step} | {verdict} | {detail}".rstrip()

    lines = [fmt(_HEADERS, False), "-+-".join("-" * w for w in widths)]
    lines += [fmt(r, color) for r in rows]
    lines.append("")
    for case in result.cases:
        lines += _case_lines(case, color)
    lines += _clock_lines(result)
    lines.append(_result_line(result, color))
    if result.output_dir:
        lines.append(f"results: {Path(result.output_dir) / 'results.json'}")
    return "\n".join(_defuse(line) for line in lines) + "\n"


def _case_lines(case: CaseResult, color: bool) -> list[str]:
    """The figures line of one case, and its reason when it did not pass."""
    m, t = case.migration, case.traffic
    verdict = case.verdict.upper()
    lines = [
        f"{case.name}: {_paint(case.verdict, verdict) if color else verdict} in "
        f"{seconds_text(case.duration_s)}; migration {m.status or '-'}, total "
        f"{m.total_time_ms} ms, downtime {m.downtime_ms} ms, "
        f"RAM {mib(m.ram_transferred_bytes):.1f} MiB; traffic sent {t.sent}, "
        f"before {t.received_before}, during {t.received_during}, after {t.received_after}"
    ]
    outage = _outage_line(case)
    if outage:
        lines.append(outage)
    lines += _breakdown_lines(case)
    if case.reason and case.verdict != "pass":
        lines.append(f"  reason: {_one_line(case.reason, limit=200)}")
    return lines


def _outage_line(case: CaseResult) -> str | None:
    """The probe outage with what it is worth (uncertainty, noise floor), or None without
    one: a figure read without its noise floor is read as more precise than it is."""
    m = case_measure(case)
    outage, spread = number(m.get("outage_ms")), number(m.get("outage_uncertainty_ms"))
    if outage is None or spread is None:
        return None
    raw = m.get("noise_ms")
    noise: dict[str, Any] = raw if isinstance(raw, dict) else {}
    p99, top = number(noise.get("p99")), number(noise.get("max"))
    line = f"  outage {outage:.1f} ms ± {spread:.1f} ms"
    if p99 is not None and top is not None:
        line += f" (noise p99 {p99:.1f} ms, max {top:.1f} ms)"
    if m.get("below_noise") is True:
        line += ": below the noise floor"
    pre = number(m.get("precopy_max_gap_ms"))
    if pre is not None:
        line += f"; largest precopy gap {pre:.1f} ms"
    return line


def _clock_lines(result: RunResult) -> list[str]:
    """The nodes' clock offsets on a testbed, and a warning for each one known less well
    than the probe interval (its events then cannot be placed between two probes)."""
    clocks = {r: c for r, c in result.clocks.items() if not c.get("same_clock")}
    if not clocks:
        return []
    rates = [number(case_measure(c).get("resolution_ms")) for c in result.cases]
    interval = min((r for r in rates if r is not None), default=None)
    lines = [
        "clocks (node - controller): "
        + ", ".join(
            f"{role} {c.get('offset_ms', 0):+.3f} ± {c.get('uncertainty_ms', 0):.3f} ms"
            for role, c in clocks.items()
        )
    ]
    for role, c in clocks.items():
        spread = number(c.get("uncertainty_ms")) or 0.0
        if interval is not None and spread > interval:
            lines.append(
                f"  warning: the {role}'s clock is known only to ±{spread:.2f} ms, more than "
                f"the probe interval ({interval:g} ms): its events are placed that loosely"
            )
    return lines


def _breakdown_lines(case: CaseResult) -> list[str]:
    """Each migration's outage explained, its biggest segment named (issue 13)."""
    found = [(title, breakdown_text(bd)) for title, bd in case_breakdowns(case)]
    found = [(title, text) for title, text in found if text]
    if len(found) == 1:
        return [f"  {found[0][1]}"]
    return [f"  {title}: {text}" for title, text in found]


def _result_line(result: RunResult, color: bool) -> str:
    counts = {v: sum(1 for c in result.cases if c.verdict == v) for v in VERDICTS}
    overall = "PASS" if result.exit_code == 0 else "FAIL"
    if color:
        overall = _paint("pass" if overall == "PASS" else "fail", overall)
    n = len(result.cases)
    tally = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    noun = "case" if n == 1 else "cases"
    return f"result: {overall} ({n} {noun}: {tally}) in {seconds_text(result.duration_s)}"


def _paint(verdict: str, text: str) -> str:
    code = _COLORS.get(verdict)
    return f"\x1b[{code}m{text}\x1b[0m" if code else text


def _one_line(text: str, limit: int = _MAX_DETAIL) -> str:
    """Collapse whitespace (program output may span lines) and cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _defuse(line: str) -> str:
    """Indent a line that the CI harness would mistake for its own result line."""
    return f"| {line}" if _CI_RESULT_LINE.match(line) else line
