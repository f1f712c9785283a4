"""JUnit XML for CI (Jenkins, GitLab): one testcase per case, steps and figures in system-out.

Also holds what the HTML report shares with it: the key figures of a case and atomic writes.
"""

from __future__ import annotations

import math
import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vhostlm.report.results import CaseResult, RunResult, StepResult, write_text_atomic

# Characters XML 1.0 cannot carry at all (program output may contain ESC, NUL, ...).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MESSAGE_MAX = 500


@dataclass(frozen=True)
class FigureRow:
    """One figure: group, machine key, human label, value (None = not measured), unit."""

    group: str
    key: str
    label: str
    value: float | int | str | None
    unit: str = ""

    @property
    def text(self) -> str:
        """The value for people: numbers trimmed, unit appended, "—" when not measured."""
        if self.value is None:
            return "—"
        if isinstance(self.value, str):
            return self.value
        return f"{format_number(self.value)} {self.unit}".rstrip()

    @property
    def raw(self) -> str:
        """The value for machines: a plain number or text, "-" when not measured."""
        if self.value is None:
            return "-"
        return self.value if isinstance(self.value, str) else format_number(self.value)


def number(value: Any) -> float | int | None:
    """`value` if it is a finite int or float (not a bool), else None: measure keys may be null."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_number(value: float | int) -> str:
    """An int as is; a float with at most three decimals, trailing zeros dropped."""
    if isinstance(value, int):
        return str(value)
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def case_measure(case: CaseResult) -> dict[str, Any]:
    """The case's probe figures (`CaseResult.measure`); {} when absent or not an object."""
    return case.measure if isinstance(case.measure, dict) else {}


def sub_object(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    """`mapping[key]` when it is an object, else {} (keys may be missing or null)."""
    inner = mapping.get(key)
    return inner if isinstance(inner, dict) else {}


def figure_rows(case: CaseResult) -> list[FigureRow]:
    """Key figures of a case in groups: migration (QEMU), measure (probes), traffic (seed)."""
    measure = case_measure(case)
    rows = _migration_rows(case, sub_object(measure, "qemu"))
    if measure:
        rows += _measure_rows(measure, rows[3].value)
    t = case.traffic
    rows += [
        FigureRow("traffic", "sent", "sent by the tester", t.sent),
        FigureRow("traffic", "received_before", "received before migration", t.received_before),
        FigureRow("traffic", "received_during", "received during migration", t.received_during),
        FigureRow("traffic", "received_after", "received after migration", t.received_after),
    ]
    return rows


def _migration_rows(case: CaseResult, qemu: dict[str, Any]) -> list[FigureRow]:
    """QEMU's query-migrate figures; without a status in the case, those of measure.qemu."""
    m = case.migration

    def pick(key: str, own: float | int) -> float | int | None:
        return own if own or m.status else number(qemu.get(key))

    ram = pick("ram_transferred_bytes", m.ram_transferred_bytes)
    return [
        FigureRow("migration", "status", "status", m.status or None),
        FigureRow(
            "migration", "total_time_ms", "total time", pick("total_time_ms", m.total_time_ms), "ms"
        ),
        FigureRow(
            "migration", "setup_time_ms", "setup time", pick("setup_time_ms", m.setup_time_ms), "ms"
        ),
        FigureRow(
            "migration", "downtime_ms", "downtime (QEMU)", pick("downtime_ms", m.downtime_ms), "ms"
        ),
        FigureRow(
            "migration",
            "expected_downtime_ms",
            "expected downtime",
            pick("expected_downtime_ms", m.expected_downtime_ms),
            "ms",
        ),
        FigureRow(
            "migration",
            "ram_transferred_mib",
            "RAM transferred",
            None if ram is None else ram / (1024 * 1024),
            "MiB",
        ),
        FigureRow("migration", "mbps", "throughput", pick("mbps", m.mbps), "Mbit/s"),
        FigureRow(
            "migration",
            "dirty_sync_count",
            "dirty-sync rounds",
            pick("dirty_sync_count", m.dirty_sync_count),
        ),
    ]


def _measure_rows(measure: dict[str, Any], downtime: Any) -> list[FigureRow]:
    """The probe stream's figures; the outage window relative to the first probe when known."""
    sent, lost, outage = (number(measure.get(k)) for k in ("sent", "lost", "outage_ms"))
    downtime = number(downtime)
    announce = sub_object(measure, "announce")
    seen = announce.get("seen")
    kind = announce.get("kind")
    rows = [
        FigureRow("measure", "pps", "probe rate", number(measure.get("pps")), "pps"),
        FigureRow(
            "measure", "resolution_ms", "resolution", number(measure.get("resolution_ms")), "ms"
        ),
        FigureRow("measure", "sent", "probes sent", sent),
        FigureRow("measure", "replies", "replies", number(measure.get("replies"))),
        FigureRow("measure", "lost", "lost", lost),
        FigureRow(
            "measure",
            "loss_pct",
            "loss",
            100.0 * lost / sent if sent and lost is not None else None,
            "%",
        ),
        FigureRow("measure", "duplicates", "duplicates", number(measure.get("duplicates"))),
        FigureRow("measure", "reordered", "reordered", number(measure.get("reordered"))),
        FigureRow("measure", "outage_ms", "outage (largest reply gap)", outage, "ms"),
        FigureRow("measure", "outage_window", "outage window", _outage_window(measure)),
        FigureRow(
            "measure",
            "stop_to_resume_ms",
            "source STOP → backup RESUME",
            number(measure.get("stop_to_resume_ms")),
            "ms",
        ),
        FigureRow(
            "measure",
            "outage_over_downtime",
            "outage ÷ QEMU downtime",
            round(outage / downtime, 2) if outage is not None and downtime else None,
            "×",
        ),
        FigureRow(
            "measure",
            "announce_seen",
            "announce seen",
            None if not isinstance(seen, bool) else ("yes" if seen else "no"),
        ),
        FigureRow(
            "measure",
            "announce_kind",
            "announce kind",
            kind if isinstance(kind, str) and kind else None,
        ),
        FigureRow(
            "measure",
            "announce_after_resume_ms",
            "announce after RESUME",
            number(announce.get("after_resume_ms")),
            "ms",
        ),
    ]
    return rows


def _outage_window(measure: dict[str, Any]) -> str | None:
    """The outage as "14.401 – 14.449 s" after the first probe; UTC clock times without a t0."""
    start, end = number(measure.get("outage_start")), number(measure.get("outage_end"))
    if start is None or end is None:
        return None
    t0 = number(sub_object(measure, "timeline").get("t0"))
    if t0 is not None:
        return f"{start - t0:.3f} – {end - t0:.3f} s"
    try:
        a, b = (datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3] for t in (start, end))
    except (OverflowError, OSError, ValueError):
        return None
    return f"{a} – {b} UTC"


# --- JUnit XML ----------------------------------------------------------------------------


def render_junit(result: RunResult) -> str:
    """The run as a JUnit XML document (UTF-8 declaration included)."""
    counts = {
        "tests": len(result.cases),
        "failures": sum(1 for c in result.cases if _outcome(c) == "failure"),
        "errors": sum(1 for c in result.cases if _outcome(c) == "error"),
        "skipped": sum(1 for c in result.cases if _outcome(c) == "skipped"),
    }
    duration = result.duration_s or sum(c.duration_s for c in result.cases)
    totals = {k: str(v) for k, v in counts.items()} | {"time": f"{duration:.3f}"}
    root = ET.Element("testsuites", {"name": "vhostlm", **totals})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": f"vhostlm.{_clean(result.testbed) or 'lab'}",
            **totals,
            "timestamp": _clean(result.started),
        },
    )
    if result.host.get("hostname"):
        suite.set("hostname", _clean(result.host["hostname"]))
    _properties(suite, result)
    plan = getattr(result, "plan", "") or "seed"
    for case in result.cases:
        _testcase(suite, case, str(getattr(case, "plan", "") or plan))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(result: RunResult, path: Path) -> None:
    """Write the JUnit XML of `result` to `path` atomically."""
    write_text_atomic(path, render_junit(result))


def _outcome(case: CaseResult) -> str:
    """ "error", "failure", "skipped" or "" (passed); a failed step fails a case marked pass."""
    if case.verdict == "error":
        return "error"
    if case.verdict == "fail" or not case.ok:
        return "failure"
    return "skipped" if case.verdict == "skip" else ""


def _properties(suite: ET.Element, result: RunResult) -> None:
    props = ET.SubElement(suite, "properties")
    pairs = [("accel", result.accel), ("testbed", result.testbed), ("started", result.started)]
    pairs += [("run_id", result.run_id), ("output_dir", result.output_dir)]
    pairs += [(f"version.{k}", v) for k, v in sorted(result.versions.items())]
    pairs += [(f"host.{k}", v) for k, v in sorted(result.host.items())]
    if result.command:
        pairs.append(("command", shlex.join(result.command)))
    for name, value in pairs:
        if value:
            ET.SubElement(props, "property", name=_clean(name), value=_clean(value))


def _testcase(suite: ET.Element, case: CaseResult, plan: str) -> None:
    attrs = {"classname": f"vhostlm.{_clean(plan)}", "name": _clean(case.name)}
    element = ET.SubElement(suite, "testcase", attrs | {"time": f"{case.duration_s:.3f}"})
    outcome = _outcome(case)
    if outcome:
        bad = [s for s in case.steps if s.verdict in ("fail", "error")]
        message = case.reason or (_step_reason(bad[0]) if bad else case.verdict)
        child = ET.SubElement(element, outcome, message=_clean(_one_line(message)))
        if outcome != "skipped":
            child.set("type", case.verdict if case.verdict in ("fail", "error") else "fail")
            body = [case.reason] if case.reason else []
            body += [_step_block(s) for s in bad]
            child.text = _clean("\n\n".join(body)) or None
    ET.SubElement(element, "system-out").text = _clean(_system_out(case))


def _system_out(case: CaseResult) -> str:
    lines = [f"case {case.name}: {case.verdict.upper()} in {case.duration_s:.1f} s"]
    if case.reason:
        lines.append(f"reason: {case.reason}")
    lines.append("steps:")
    width = max((len(s.name) for s in case.steps), default=0)
    for s in case.steps:
        detail = "\n".join(_indent(s.detail.splitlines(), width + 20)).lstrip()
        lines.append(
            f"  {s.verdict.upper():<5} {s.name:<{width}} {s.duration_s:7.1f} s  {detail}".rstrip()
        )
    if not case.steps:
        lines.append("  (none)")
    lines.append("figures:")
    lines += [f"  {r.group}.{r.key}: {r.raw}" for r in figure_rows(case)]
    return "\n".join(lines) + "\n"


def _step_reason(step: StepResult) -> str:
    return f"{step.name}: {step.detail}" if step.detail else step.name


def _step_block(step: StepResult) -> str:
    head = f"step {step.name}: {step.verdict.upper()} after {step.duration_s:.1f} s"
    return "\n".join([head, *_indent(step.detail.splitlines(), 2)])


def _indent(lines: list[str], n: int) -> list[str]:
    return [" " * n + line for line in lines]


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MESSAGE_MAX else flat[: _MESSAGE_MAX - 3] + "..."


def _clean(text: str) -> str:
    """Text XML 1.0 can carry: each forbidden character becomes a visible \\xNN escape."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
