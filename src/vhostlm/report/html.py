"""A self-contained report.html: per case a reply timeline on a canvas, steps and figures.

Rendered from Jinja2 templates (`templates/`, autoescaped) with the CSS and JS of `static/`
and the data as JSON inlined, so the page is one file that works from file:// offline.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from vhostlm import __version__
from vhostlm.report.figures import (
    FigureRow,
    breakdown_segments,
    breakdown_text,
    case_breakdowns,
    case_measure,
    duration_text,
    figure_rows,
    format_number,
    number,
    seconds_text,
    sub_object,
    when_text,
)
from vhostlm.report.results import VERDICTS, CaseResult, RunResult, write_text_atomic

REPORT_NAME = "report.html"
NO_TIMELINE = "no probe timeline (run without probes)"
PAGE_TEMPLATE = "report.html.j2"
_GROUP_TITLES = {
    "migration": "QEMU migration (query-migrate)",
    "measure": "Probe stream",
    "traffic": "Seed traffic counters",
}
_CARD_KEYS = [
    ("outage_ms", "outage"),
    ("lost", "probes lost"),
    ("downtime_ms", "QEMU downtime"),
    ("stop_to_resume_ms", "STOP → RESUME"),
    ("outage_over_downtime", "outage ÷ downtime"),
    ("announce_after_resume_ms", "announce after RESUME"),
    ("total_time_ms", "migration total"),
]
_MAX_CARDS = 5
_SUMMARY_KEYS = ("outage_ms", "lost", "downtime_ms")
_LEGEND = (
    ("s-mean", "replies per ms (mean per pixel column)"),
    ("s-max", "max per pixel column"),
    ("s-active", "migration active"),
    ("s-window", "source STOP → backup RESUME"),
    ("s-outage", "outage (largest reply gap)"),
    ("s-mark", "QMP events and announce"),
)


def render_report_files(result: RunResult, out_dir: Path) -> Path:
    """Write report.html into `out_dir` (beside results.json) and return its path."""
    path = out_dir / REPORT_NAME
    write_html(result, path)
    return path


def write_html(result: RunResult, path: Path) -> None:
    """Write the HTML report of `result` to `path` atomically."""
    write_text_atomic(path, render_html(result))


def render_html(result: RunResult) -> str:
    """The whole report page as one HTML document."""
    overall = "pass" if result.exit_code == 0 else "fail"
    return (
        _environment()
        .get_template(PAGE_TEMPLATE)
        .render(
            title=f"vhostlm report · {overall.upper()} · {when_text(result.started)}",
            error_js=_static("errors.js"),
            css=_static("report.css"),
            plot_js=_static("report.js"),
            header=_header(result, overall),
            rows=[_summary_row(i, c) for i, c in enumerate(result.cases)],
            cases=[_case_view(i, c) for i, c in enumerate(result.cases)],
            legend=_LEGEND,
            no_timeline=NO_TIMELINE,
            version=__version__,
            generated=when_text(_now()),
            data_json=Markup(embed_json(_page_data(result))),  # escaped for <script>
        )
    )


def embed_json(data: Any) -> str:
    """JSON safe inside a <script> element: `<`, `>`, `&` and line separators as \\u escapes."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def timeline_data(case: CaseResult) -> dict[str, Any] | None:
    """What the plot needs, times in ms after the first probe; None without a usable timeline."""
    measure = case_measure(case)
    timeline = sub_object(measure, "timeline")
    t0 = number(timeline.get("t0"))
    replies = timeline.get("reply_ms")
    if t0 is None or not isinstance(replies, list):
        return None
    reply_ms = sorted(round(float(v), 3) for v in replies if number(v) is not None)
    marks = {
        k: float(v) for k, v in sub_object(timeline, "marks_ms").items() if number(v) is not None
    }
    announce_at = number(sub_object(measure, "announce").get("at"))
    if "announce" not in marks and announce_at is not None:
        marks["announce"] = round((announce_at - t0) * 1000, 3)
    start, end = number(measure.get("outage_start")), number(measure.get("outage_end"))
    pps, sent = number(measure.get("pps")), number(measure.get("sent"))
    return {
        "t0": t0,
        "reply_ms": reply_ms,
        "marks_ms": marks,
        "outage": None if start is None or end is None else _rel(start, end, t0),
        "outage_ms": number(measure.get("outage_ms")),
        "stop_to_resume_ms": number(measure.get("stop_to_resume_ms")),
        "span_ms": 1000.0 * sent / pps if sent and pps else None,
    }


def _rel(start: float, end: float, t0: float) -> list[float]:
    """A window of epoch seconds as ms after `t0`."""
    return [round((start - t0) * 1000, 3), round((end - t0) * 1000, 3)]


def _page_data(result: RunResult) -> dict[str, Any]:
    """The JSON the plot script reads: per case its verdict and timeline."""
    cases = []
    for case in result.cases:
        timeline = timeline_data(case)
        replies = len(timeline["reply_ms"]) if timeline else 0
        entry = {"name": case.name, "verdict": case.verdict, "reason": case.reason}
        cases.append(entry | {"replies": replies, "timeline": timeline})
    return {"started": result.started, "cases": cases}


# --- what the templates show: text only, escaped by Jinja ------------------------------


@dataclass(frozen=True)
class _Header:
    """The page head: overall verdict, verdict tally, run facts, the command line."""

    overall: str
    tally: list[tuple[str, int]]
    meta: list[tuple[str, str]]
    command: str


@dataclass(frozen=True)
class _SummaryRow:
    """One row of the cases table (cells: duration, outage, lost, QEMU downtime)."""

    index: int
    name: str
    verdict: str
    cells: list[str]
    reason: str


@dataclass(frozen=True)
class _StepView:
    """One row of a case's steps table."""

    name: str
    verdict: str
    detail: str
    duration: str


@dataclass(frozen=True)
class _BarSegment:
    """One segment of a breakdown bar: its colour class, share of the bar (percent, as
    text for the style attribute), its words, inside the outage or not, the biggest."""

    cls: str
    width: str
    text: str
    inside: bool
    biggest: bool


@dataclass(frozen=True)
class _BarView:
    """One migration's outage breakdown: a stacked bar of its segments and the words."""

    title: str
    text: str
    segments: list[_BarSegment]
    note: str


@dataclass(frozen=True)
class _CaseView:
    """One case's section: head, key-figure cards, plot or note, steps, figure tables."""

    index: int
    name: str
    verdict: str
    duration: str
    reason: str
    cards: list[tuple[str, str]]
    plot: bool
    steps: list[_StepView]
    tables: list[tuple[str, list[tuple[str, str, str]]]]
    bars: list[_BarView]


@cache
def _environment() -> Environment:
    """The template environment: HTML autoescaping on, undefined names an error."""
    return Environment(
        loader=PackageLoader("vhostlm.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@cache
def _static(name: str) -> Markup:
    """A file of `static/`, trusted and inlined as is; it must not end its own element."""
    text = resources.files("vhostlm.report").joinpath("static", name).read_text("utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"static/{name} would close its inline <script> or <style> element")
    return Markup(text)  # shipped with the package, not user data


def _header(result: RunResult, overall: str) -> _Header:
    """The page head's text; facts that are empty (not known) are left out."""
    counts = [(v, sum(1 for c in result.cases if c.verdict == v)) for v in VERDICTS]
    meta: list[tuple[str, str]] = [
        ("started", when_text(result.started)),
        ("duration", duration_text(result.duration_s)),
        ("accel", result.accel.upper() or "not probed"),
        ("testbed", result.testbed),
    ]
    meta += sorted(result.versions.items())
    meta += [("run id", result.run_id), ("output", result.output_dir)]
    meta += [(f"host {k}", v) for k, v in sorted(result.host.items())]
    return _Header(
        overall=overall,
        tally=[(v, n) for v, n in counts if n or v == "pass"],
        meta=[(k, v) for k, v in meta if v],
        command=shlex.join(result.command) if result.command else "",
    )


def _summary_row(index: int, case: CaseResult) -> _SummaryRow:
    """A case's row of the cases table, "—" for a figure the case does not have."""
    fig = {r.key: r for r in figure_rows(case)}
    return _SummaryRow(
        index=index,
        name=case.name,
        verdict=case.verdict,
        cells=[duration_text(case.duration_s)]
        + [fig[k].text if k in fig else "—" for k in _SUMMARY_KEYS],
        reason=case.reason,
    )


def _case_view(index: int, case: CaseResult) -> _CaseView:
    """Everything a case's section shows, formatted by `vhostlm.report.figures`."""
    rows = figure_rows(case)
    return _CaseView(
        index=index,
        name=case.name,
        verdict=case.verdict,
        duration=duration_text(case.duration_s),
        reason=case.reason,
        cards=_cards(rows),
        plot=timeline_data(case) is not None,
        steps=[
            _StepView(s.name, s.verdict, s.detail, seconds_text(s.duration_s)) for s in case.steps
        ],
        tables=_figure_tables(rows),
        bars=_breakdown_bars(case),
    )


_SEGMENT_ENDS = ("last_reply", "stop", "resume", "ready", "first_reply", "announce")


def _breakdown_bars(case: CaseResult) -> list[_BarView]:
    """One stacked bar per migration: its segments in time order, each as wide as its share
    of the time from the first moment to the last (those outside the outage hatched)."""
    bars = []
    for title, bd in case_breakdowns(case):
        segments = breakdown_segments(bd)
        text = breakdown_text(bd)
        total = sum(max(float(s["ms"]), 0.0) for s in segments)
        if not segments or text is None or total <= 0:
            continue
        summed = [s for s in segments if s.get("in_outage")] or segments
        big = max(summed, key=lambda s: float(s["ms"]))
        views = [
            _BarSegment(
                cls=f"bd-{s.get('end')}" if s.get("end") in _SEGMENT_ENDS else "bd-other",
                width=f"{100.0 * max(float(s['ms']), 0.0) / total:.3f}",
                text=f"{format_number(round(float(s['ms']), 1))} ms {s['label']}",
                inside=bool(s.get("in_outage")) or number(bd.get("outage_ms")) is None,
                biggest=s is big,
            )
            for s in segments
        ]
        bars.append(_BarView(title, text, views, _breakdown_note(bd)))
    return bars


def _breakdown_note(bd: dict[str, Any]) -> str:
    """The sum against the outage, the ready line it was timed by, what is missing."""
    parts = []
    total, outage = number(bd.get("sum_ms")), number(bd.get("outage_ms"))
    spread, diff = number(bd.get("uncertainty_ms")), number(bd.get("difference_ms"))
    if total is not None and outage is not None:
        part = (
            f"segments in the outage sum to {format_number(total)} ms of {format_number(outage)} ms"
        )
        if diff is not None:
            part += f" (difference {format_number(diff)} ms"
            part += f", uncertainty ± {format_number(spread)} ms)" if spread is not None else ")"
        parts.append(part)
    order = bd.get("out_of_order")
    if isinstance(order, list) and order:
        parts.append("out of order: " + ", ".join(str(o) for o in order))
    missing = bd.get("missing")
    if isinstance(missing, list) and missing:
        parts.append("not seen: " + ", ".join(str(m) for m in missing))
    line = bd.get("ready_line")
    if isinstance(line, str) and line:
        parts.append(f"ready: {line}")
    return "; ".join(parts)


def _cards(rows: list[FigureRow]) -> list[tuple[str, str]]:
    """(text, label) of the first key figures that were measured."""
    by_key = {r.key: r for r in rows}
    cards = [
        (by_key[k].text, label)
        for k, label in _CARD_KEYS
        if k in by_key and by_key[k].value is not None
    ]
    return cards[:_MAX_CARDS]


def _figure_tables(rows: list[FigureRow]) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Per group with figures: its title and (label, text, "txt" or "num") rows."""
    tables = []
    for group, title in _GROUP_TITLES.items():
        mine = [(r.label, r.text, _value_class(r)) for r in rows if r.group == group]
        if mine:
            tables.append((title, mine))
    return tables


def _value_class(row: FigureRow) -> str:
    """Text figures are not right-aligned numbers."""
    return "txt" if isinstance(row.value, str) else "num"


def _now() -> str:
    """The footer's generation time (a function so tests can pin it)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")
