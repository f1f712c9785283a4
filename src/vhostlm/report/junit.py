"""JUnit XML for CI (Jenkins, GitLab): one testcase per case, steps and figures in system-out.

The figures and their strings come from `vhostlm.report.figures`, as in the HTML report.
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

from vhostlm.report.figures import figure_rows, seconds_text
from vhostlm.report.results import CaseResult, RunResult, StepResult, write_text_atomic

# Characters XML 1.0 cannot carry at all (program output may contain ESC, NUL, ...).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MESSAGE_MAX = 500


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
    lines = [f"case {case.name}: {case.verdict.upper()} in {seconds_text(case.duration_s)}"]
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
    head = f"step {step.name}: {step.verdict.upper()} after {seconds_text(step.duration_s)}"
    return "\n".join([head, *_indent(step.detail.splitlines(), 2)])


def _indent(lines: list[str], n: int) -> list[str]:
    return [" " * n + line for line in lines]


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MESSAGE_MAX else flat[: _MESSAGE_MAX - 3] + "..."


def _clean(text: str) -> str:
    """Text XML 1.0 can carry: each forbidden character becomes a visible \\xNN escape."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
