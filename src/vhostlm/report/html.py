"""A self-contained report.html: per case a reply timeline on a canvas, steps and figures.

Everything is inline (CSS, JS, data as JSON) so the page works from file:// with no network.
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from vhostlm import __version__
from vhostlm.report.junit import (
    FigureRow,
    case_measure,
    figure_rows,
    number,
    sub_object,
)
from vhostlm.report.results import VERDICTS, CaseResult, RunResult, write_text_atomic

REPORT_NAME = "report.html"
NO_TIMELINE = "no probe timeline (run without probes)"
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
    title = f"vhostlm report · {overall.upper()} · {_when(result.started)}"
    body = [
        _header(result, overall),
        _summary_table(result),
        *(_case_section(i, c) for i, c in enumerate(result.cases)),
        f"<footer>vhostlm {escape(__version__)} · generated {escape(_when(_now()))}</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en" data-js-errors="0">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<script>{_ERROR_JS}</script>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n"
        + f'<script type="application/json" id="vhostlm-data">{embed_json(_page_data(result))}'
        + "</script>\n"
        + f"<script>{_PLOT_JS}</script>\n</body>\n</html>\n"
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
    return [round((start - t0) * 1000, 3), round((end - t0) * 1000, 3)]


def _page_data(result: RunResult) -> dict[str, Any]:
    cases = []
    for case in result.cases:
        timeline = timeline_data(case)
        replies = len(timeline["reply_ms"]) if timeline else 0
        entry = {"name": case.name, "verdict": case.verdict, "reason": case.reason}
        cases.append(entry | {"replies": replies, "timeline": timeline})
    return {"started": result.started, "cases": cases}


# --- HTML pieces ---------------------------------------------------------------------------


def _header(result: RunResult, overall: str) -> str:
    counts = [(v, sum(1 for c in result.cases if c.verdict == v)) for v in VERDICTS]
    tally = "".join(
        f'<span class="chip v-{v}">{n} {v}</span>' for v, n in counts if n or v == "pass"
    )
    meta: list[tuple[str, str]] = [
        ("started", _when(result.started)),
        ("duration", _duration(result.duration_s)),
        ("accel", result.accel.upper() or "not probed"),
        ("testbed", result.testbed),
    ]
    meta += [(f"{k}", v) for k, v in sorted(result.versions.items())]
    meta += [("run id", result.run_id), ("output", result.output_dir)]
    meta += [(f"host {k}", v) for k, v in sorted(result.host.items())]
    items = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in meta if v)
    command = ""
    if result.command:
        code = escape(shlex.join(result.command))
        command = f"<details><summary>command</summary><code>{code}</code></details>"
    return (
        f'<header class="card"><div class="title"><h1>vhostlm · live migration report</h1>'
        f'{_badge(overall, "big")}<span class="tally">{tally}</span></div>'
        f'<dl class="meta">{items}</dl>{command}</header>'
    )


def _summary_table(result: RunResult) -> str:
    names = ("case", "verdict", "duration", "outage", "lost", "QEMU downtime", "reason")
    head = "<tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    rows = []
    for i, case in enumerate(result.cases):
        fig = {r.key: r for r in figure_rows(case)}
        cells = [
            f'<a href="#case-{i}">{escape(case.name)}</a>',
            _badge(case.verdict),
            escape(_duration(case.duration_s)),
            *(
                escape(fig[k].text) if k in fig else "—"
                for k in ("outage_ms", "lost", "downtime_ms")
            ),
            f'<span class="clip">{escape(case.reason)}</span>',
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not rows:
        rows.append('<tr><td colspan="7" class="muted">no cases ran</td></tr>')
    table = f'<table class="summary">{head}{"".join(rows)}</table>'
    return f'<section class="card"><h2>Cases</h2>{table}</section>'


def _case_section(index: int, case: CaseResult) -> str:
    rows = figure_rows(case)
    reason = f'<p class="reason r-{case.verdict}">{escape(case.reason)}</p>' if case.reason else ""
    if timeline_data(case) is None:
        plot = f'<p class="noplot">{escape(NO_TIMELINE)}</p>'
    else:
        plot = (
            f'<figure class="plot"><canvas class="timeline" data-case="{index}" '
            f'aria-label="{escape(case.name)}: replies per millisecond"></canvas>'
            f"<figcaption>{_LEGEND}</figcaption></figure>"
        )
    return (
        f'<section class="card case" id="case-{index}">'
        f'<div class="case-head">{_badge(case.verdict)}<h2>{escape(case.name)}</h2>'
        f'<span class="muted">{escape(_duration(case.duration_s))}</span></div>'
        f"{reason}{_cards(rows)}{plot}"
        f"<h3>Steps</h3>{_steps_table(case)}"
        f'<h3>Figures</h3><div class="figs">{_figure_tables(rows)}</div></section>'
    )


def _cards(rows: list[FigureRow]) -> str:
    by_key = {r.key: r for r in rows}
    cards = [
        f'<div class="kpi"><div class="kv">{escape(by_key[k].text)}</div>'
        f'<div class="kl">{escape(label)}</div></div>'
        for k, label in _CARD_KEYS
        if k in by_key and by_key[k].value is not None
    ][:_MAX_CARDS]
    return f'<div class="kpis">{"".join(cards)}</div>' if cards else ""


def _steps_table(case: CaseResult) -> str:
    if not case.steps:
        return '<p class="muted">no steps ran</p>'
    rows = "".join(
        f"<tr><td>{escape(s.name)}</td><td>{_badge(s.verdict)}</td>"
        f'<td class="detail">{escape(s.detail)}</td><td class="num">{s.duration_s:.1f} s</td></tr>'
        for s in case.steps
    )
    head = '<tr><th>step</th><th>verdict</th><th>detail</th><th class="num">duration</th></tr>'
    return f'<table class="steps">{head}{rows}</table>'


def _figure_tables(rows: list[FigureRow]) -> str:
    out = []
    for group, title in _GROUP_TITLES.items():
        mine = [r for r in rows if r.group == group]
        if not mine:
            continue
        body = "".join(
            f"<tr><th>{escape(r.label)}</th>"
            f'<td class="{_value_class(r)}">{escape(r.text)}</td></tr>'
            for r in mine
        )
        out.append(f'<table class="figures"><caption>{escape(title)}</caption>{body}</table>')
    return "".join(out)


def _value_class(row: FigureRow) -> str:
    return "txt" if isinstance(row.value, str) else "num"


def _badge(verdict: str, size: str = "") -> str:
    return f'<span class="badge v-{escape(verdict)} {size}">{escape(verdict.upper())}</span>'


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s"


def _when(iso: str) -> str:
    """ISO 8601 as "2025-11-26 10:00:00 +01:00"; the text as is when it is not ISO."""
    try:
        stamp = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    offset = stamp.strftime("%z")
    zone = f" {offset[:3]}:{offset[3:]}" if offset else ""
    return stamp.strftime("%Y-%m-%d %H:%M:%S") + zone


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


_LEGEND = "".join(
    f'<span class="item"><span class="sw {cls}"></span>{text}</span>'
    for cls, text in (
        ("s-mean", "replies per ms (mean per pixel column)"),
        ("s-max", "max per pixel column"),
        ("s-active", "migration active"),
        ("s-window", "source STOP → backup RESUME"),
        ("s-outage", "outage (largest reply gap)"),
        ("s-mark", "QMP events and announce"),
    )
)

# Records uncaught errors, rejections and console.error on <html> for tests (and humans).
_ERROR_JS = """
(function () {
  var root = document.documentElement, log = [];
  function record(text) {
    log.push(String(text));
    root.setAttribute("data-js-errors", String(log.length));
    root.setAttribute("data-js-error-log", log.join(" | ").slice(0, 4000));
  }
  window.onerror = function (msg, src, line, col) {
    record(msg + " (line " + line + ":" + col + ")");
  };
  window.addEventListener("unhandledrejection", function (e) {
    record("unhandled rejection: " + e.reason);
  });
  var original = console.error;
  console.error = function () {
    record("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
"""

_CSS = """
:root { --bg:#f4f6f9; --card:#fff; --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb;
  --pass:#15803d; --pass-bg:#dcfce7; --fail:#b91c1c; --fail-bg:#fee2e2;
  --error:#9a3412; --error-bg:#ffedd5; --skip:#4b5563; --skip-bg:#e5e7eb; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 24px 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 20px; margin-bottom: 18px; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 17px; margin: 0; }
h3 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted);
  margin: 18px 0 6px; }
.title { display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
.tally { display: flex; gap: 6px; margin-left: auto; }
.chip { font-size: 12px; padding: 2px 8px; border-radius: 999px; font-weight: 600; }
.meta { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr));
  gap: 6px 18px; margin: 14px 0 0; }
.meta div { min-width: 0; }
.meta dt { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.meta dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
details { margin-top: 10px; color: var(--muted); }
details code { display: block; white-space: pre-wrap; overflow-wrap: anywhere; color: var(--ink);
  background: #f9fafb; padding: 6px 8px; border-radius: 6px; margin-top: 4px; }
.badge { display: inline-block; min-width: 46px; text-align: center; font-size: 11px;
  font-weight: 700; letter-spacing: .04em; padding: 2px 7px; border-radius: 5px; }
.badge.big { font-size: 14px; padding: 3px 12px; }
.v-pass { color: var(--pass); background: var(--pass-bg); }
.v-fail { color: var(--fail); background: var(--fail-bg); }
.v-error { color: var(--error); background: var(--error-bg); }
.v-skip { color: var(--skip); background: var(--skip-bg); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; color: #374151; }
tr:last-child td, tr:last-child th { border-bottom: none; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.summary td:nth-child(n+3):nth-child(-n+6) { font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.summary a { color: #1d4ed8; text-decoration: none; font-weight: 600; }
.clip { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden;
  overflow-wrap: anywhere; color: var(--muted); }
.case-head { display: flex; align-items: center; gap: 10px; }
.case-head .muted { margin-left: auto; }
.muted { color: var(--muted); }
.reason { margin: 10px 0 0; padding: 8px 12px; border-radius: 6px; border-left: 4px solid;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.r-fail { border-color: var(--fail); background: #fef2f2; }
.r-error { border-color: var(--error); background: #fff7ed; }
.r-skip, .r-pass { border-color: var(--skip); background: #f9fafb; }
.kpis { display: flex; gap: 10px; margin: 14px 0 4px; flex-wrap: wrap; }
.kpi { flex: 1 1 130px; border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; }
.kv { font-size: 20px; font-weight: 650; font-variant-numeric: tabular-nums; }
.kl { font-size: 12px; color: var(--muted); }
.plot { margin: 14px 0 0; }
canvas.timeline { display: block; width: 100%; height: 470px; }
figcaption { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 14px; font-size: 12px;
  color: var(--muted); margin-top: 6px; }
figcaption .item { white-space: nowrap; }
.sw { display: inline-block; width: 14px; height: 10px; margin-right: 5px; border-radius: 2px;
  vertical-align: middle; }
.s-mean { background: rgba(37,99,235,.35); }
.s-max { height: 2px; background: #1e3a8a; }
.s-active { background: rgba(245,158,11,.22); }
.s-window { height: 4px; background: rgba(124,58,237,.75); }
.s-outage { background: rgba(220,38,38,.30); }
.s-mark { width: 0; height: 12px; border-left: 2px dashed #6d28d9; }
.noplot { margin: 14px 0 0; padding: 22px; text-align: center; color: var(--muted);
  border: 1px dashed #d1d5db; border-radius: 8px; background: #fafafa; }
td.detail { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 13px; }
.steps td:first-child { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px;
  white-space: nowrap; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr));
  gap: 10px 22px; align-items: start; }
.figures caption { text-align: left; font-weight: 600; padding: 4px 8px; color: #374151;
  border-bottom: 2px solid var(--line); }
.figures th { font-weight: 400; color: #4b5563; white-space: nowrap; }
.figures td.txt { text-align: right; white-space: nowrap; }
footer { text-align: center; color: var(--muted); font-size: 12px; padding: 4px 0 18px; }
"""

# Draws each case's timeline: an overview of the whole run and a zoom on the switch-over.
_PLOT_JS = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("vhostlm-data").textContent);
  var FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  var BOLD = "600 12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  var COL = {
    area: "rgba(37,99,235,0.35)", line: "#1e3a8a", grid: "#eef0f3", axis: "#9ca3af",
    text: "#374151", muted: "#6b7280", active: "rgba(245,158,11,0.13)",
    window: "rgba(124,58,237,0.75)", outage: "rgba(220,38,38,0.22)", outageText: "#b91c1c"
  };
  var MARKS = [
    ["migrate", "migrate", "#6b7280"], ["setup", "setup", "#6b7280"],
    ["active", "active", "#b45309"], ["stop", "STOP", "#6d28d9"],
    ["resume", "RESUME", "#6d28d9"], ["announce", "announce", "#15803d"],
    ["completed", "completed", "#0f766e"]
  ];
  var MAX_BINS = 20000000, LABEL_ROW = 15, LABEL_ROWS = 3;

  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

  function niceStep(span, target) {
    var raw = span / Math.max(1, target), p = Math.pow(10, Math.floor(Math.log10(raw)));
    var m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  function decimals(step) { return Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)); }

  /* Replies counted into bins of binMs (1 ms unless the run is very long). */
  function prepare(tl) {
    var replies = tl.reply_ms || [], marks = tl.marks_ms || {}, span = num(tl.span_ms) || 0;
    if (replies.length) { span = Math.max(span, replies[replies.length - 1]); }
    Object.keys(marks).forEach(function (k) {
      if (num(marks[k]) !== null) { span = Math.max(span, marks[k]); }
    });
    if (tl.outage) { span = Math.max(span, tl.outage[1]); }
    span = Math.max(span * 1.01, 10);
    var binMs = Math.max(1, Math.ceil(span / MAX_BINS)), nbins = Math.ceil(span / binMs) + 1;
    var counts = new Uint32Array(nbins), plotted = 0;
    for (var k = 0; k < replies.length; k++) {
      var i = Math.floor(replies[k] / binMs);
      if (i >= 0 && i < nbins) { counts[i]++; plotted++; }
    }
    return { tl: tl, marks: marks, span: span, binMs: binMs, counts: counts, plotted: plotted };
  }

  /* Mean and max replies per ms in each pixel column of [x0, x1). */
  function aggregate(p, x0, x1, cols) {
    var mean = new Float32Array(cols), max = new Float32Array(cols), per = (x1 - x0) / cols;
    for (var c = 0; c < cols; c++) {
      var a = x0 + c * per, i0 = Math.floor(a / p.binMs);
      var i1 = Math.max(i0 + 1, Math.floor((a + per) / p.binMs)), s = 0, m = 0;
      for (var i = i0; i < i1; i++) {
        var v = i >= 0 && i < p.counts.length ? p.counts[i] : 0;
        s += v; if (v > m) { m = v; }
      }
      mean[c] = s / (i1 - i0) / p.binMs; max[c] = m / p.binMs;
    }
    return { mean: mean, max: max, perCol: per };
  }

  /* The switch-over window to zoom on, or null when no STOP/RESUME/outage is known. */
  function zoomRange(p) {
    var m = p.marks, lo = [], hi = [];
    if (num(m.stop) !== null) { lo.push(m.stop); hi.push(m.stop); }
    if (num(m.resume) !== null) { lo.push(m.resume); hi.push(m.resume); }
    if (p.tl.outage) { lo.push(p.tl.outage[0]); hi.push(p.tl.outage[1]); }
    if (!lo.length) { return null; }
    if (num(m.announce) !== null) { hi.push(m.announce); }
    var a = Math.min.apply(null, lo), b = Math.max.apply(null, hi);
    var pad = Math.max(40, (b - a) * 0.8);
    return [Math.max(0, a - pad), Math.min(p.span, b + pad)];
  }

  function shade(ctx, box, xOf, a, b, color, minW, band) {
    if (num(a) === null || num(b) === null) { return; }
    var xa = xOf(a), xb = xOf(b);
    if (xb - xa < minW) { var mid = (xa + xb) / 2; xa = mid - minW / 2; xb = mid + minW / 2; }
    xa = Math.max(box.x, xa); xb = Math.min(box.x + box.w, xb);
    if (xb <= xa) { return; }
    ctx.fillStyle = color; ctx.fillRect(xa, box.y, xb - xa, band || box.h);
  }

  /* Marks closer than a few pixels share one label; labels stack in rows above the plot. */
  function drawMarks(ctx, box, xOf, marks) {
    var groups = [];
    MARKS.forEach(function (d) {
      var t = num(marks[d[0]]);
      if (t === null) { return; }
      var x = xOf(t);
      if (x < box.x - 0.5 || x > box.x + box.w + 0.5) { return; }
      groups.push({ x: x, names: [d[1]], color: d[2] });
    });
    groups.sort(function (a, b) { return a.x - b.x; });
    var merged = [];
    groups.forEach(function (g) {
      var last = merged[merged.length - 1];
      if (last && g.x - last.x < 5) { last.names.push(g.names[0]); } else { merged.push(g); }
    });
    ctx.font = FONT;
    var rowEnd = [];
    merged.forEach(function (g) {
      ctx.strokeStyle = g.color; ctx.lineWidth = 1; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(Math.round(g.x) + 0.5, box.y);
      ctx.lineTo(Math.round(g.x) + 0.5, box.y + box.h); ctx.stroke(); ctx.setLineDash([]);
      var text = g.names.join(" · "), w = ctx.measureText(text).width;
      var left = Math.min(Math.max(g.x - w / 2, box.x - 40), box.x + box.w + 10 - w);
      var row = 0;
      while (row < LABEL_ROWS - 1 && rowEnd[row] !== undefined && rowEnd[row] > left - 8) { row++; }
      rowEnd[row] = Math.max(rowEnd[row] || -1e9, left + w);
      var ty = box.y - 6 - (LABEL_ROWS - 1 - row) * LABEL_ROW;
      ctx.strokeStyle = g.color; ctx.globalAlpha = 0.5;
      var gx = Math.round(g.x) + 0.5;
      ctx.beginPath(); ctx.moveTo(gx, ty + 2); ctx.lineTo(gx, box.y); ctx.stroke();
      ctx.globalAlpha = 1;
      ctx.fillStyle = "rgba(255,255,255,0.85)"; ctx.fillRect(left - 2, ty - 11, w + 4, 14);
      ctx.fillStyle = g.color; ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";
      ctx.fillText(text, left, ty);
    });
  }

  function drawAxes(ctx, box, x0, x1, ymax, xTitle) {
    ctx.font = FONT; ctx.fillStyle = COL.muted; ctx.strokeStyle = COL.grid; ctx.lineWidth = 1;
    var ystep = niceStep(ymax, 4);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (var v = 0; v <= ymax + 1e-9; v += ystep) {
      var y = Math.round(box.y + box.h - v / ymax * box.h) + 0.5;
      ctx.beginPath(); ctx.moveTo(box.x, y); ctx.lineTo(box.x + box.w, y); ctx.stroke();
      ctx.fillText(String(+v.toFixed(decimals(ystep))), box.x - 6, y);
    }
    var spanS = (x1 - x0) / 1000, xstep = niceStep(spanS, box.w / 110), d = decimals(xstep);
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (var s = Math.ceil(x0 / 1000 / xstep) * xstep; s <= x1 / 1000 + 1e-9; s += xstep) {
      var x = Math.round(box.x + (s * 1000 - x0) / (x1 - x0) * box.w) + 0.5;
      ctx.strokeStyle = COL.axis; ctx.beginPath();
      ctx.moveTo(x, box.y + box.h); ctx.lineTo(x, box.y + box.h + 4); ctx.stroke();
      ctx.fillText(s.toFixed(d) + " s", x, box.y + box.h + 6);
    }
    ctx.strokeStyle = COL.axis; ctx.beginPath();
    var base = box.y + box.h + 0.5;
    ctx.moveTo(box.x, base); ctx.lineTo(box.x + box.w, base); ctx.stroke();
    ctx.save(); ctx.translate(14, box.y + box.h / 2); ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.fillText("replies / ms", 0, 0);
    ctx.restore();
    if (xTitle) {
      ctx.textAlign = "center"; ctx.textBaseline = "top";
      ctx.fillText(xTitle, box.x + box.w / 2, box.y + box.h + 22);
    }
  }

  function drawPanel(ctx, p, box, x0, x1, title, xTitle, showMax) {
    var xOf = function (t) { return box.x + (t - x0) / (x1 - x0) * box.w; };
    var cols = Math.max(1, Math.floor(box.w)), agg = aggregate(p, x0, x1, cols), m = p.marks;
    var top = 0;
    for (var c = 0; c < cols; c++) { top = Math.max(top, showMax ? agg.max[c] : agg.mean[c]); }
    var want = Math.max(top, 1) * 1.15, ystep = niceStep(want, 4);
    var ymax = ystep * Math.ceil(want / ystep), ty = box.y - LABEL_ROWS * LABEL_ROW - 14;
    ctx.font = BOLD; ctx.fillStyle = COL.text; ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic"; ctx.fillText(title, box.x - 44, ty);
    ctx.font = FONT; ctx.fillStyle = COL.muted; ctx.textAlign = "right";
    var res = agg.perCol >= 1 ? "1 px = " + (+agg.perCol.toFixed(1)) + " ms"
      : "1 ms = " + (+(1 / agg.perCol).toFixed(1)) + " px";
    ctx.fillText(res, box.x + box.w, ty);
    shade(ctx, box, xOf, num(m.active) !== null ? m.active : m.setup, m.completed, COL.active, 0);
    if (p.tl.outage) { shade(ctx, box, xOf, p.tl.outage[0], p.tl.outage[1], COL.outage, 3); }
    shade(ctx, box, xOf, m.stop, m.resume, COL.window, 2, 8);
    drawAxes(ctx, box, x0, x1, ymax, xTitle);
    ctx.save(); ctx.beginPath(); ctx.rect(box.x, box.y, box.w, box.h); ctx.clip();
    var yOf = function (v) { return box.y + box.h - v / ymax * box.h; };
    ctx.beginPath(); ctx.moveTo(box.x, box.y + box.h);
    for (c = 0; c < cols; c++) {
      var y = yOf(agg.mean[c]);
      ctx.lineTo(box.x + c, y); ctx.lineTo(box.x + c + 1, y);
    }
    ctx.lineTo(box.x + cols, box.y + box.h); ctx.closePath(); ctx.fillStyle = COL.area; ctx.fill();
    ctx.beginPath();
    var series = showMax ? agg.max : agg.mean;
    for (c = 0; c < cols; c++) {
      var ym = yOf(series[c]);
      if (c === 0) { ctx.moveTo(box.x, ym); } else { ctx.lineTo(box.x + c, ym); }
      ctx.lineTo(box.x + c + 1, ym);
    }
    ctx.strokeStyle = COL.line; ctx.lineWidth = 1; ctx.stroke();
    ctx.restore();
    drawMarks(ctx, box, xOf, m);
    if (p.tl.outage && num(p.tl.outage_ms) !== null) {
      var xa = xOf(p.tl.outage[0]), xb = xOf(p.tl.outage[1]);
      var label = "outage " + (+p.tl.outage_ms.toFixed(1)) + " ms";
      ctx.font = BOLD; var w = ctx.measureText(label).width;
      var lx = Math.min(Math.max((xa + xb) / 2 + 8, box.x + 4), box.x + box.w - w - 4);
      ctx.fillStyle = "rgba(255,255,255,0.85)"; ctx.fillRect(lx - 3, box.y + 12, w + 6, 16);
      ctx.fillStyle = COL.outageText; ctx.textAlign = "left"; ctx.textBaseline = "top";
      ctx.fillText(label, lx, box.y + 14);
    }
  }

  function draw(canvas, p) {
    var zoom = zoomRange(p), head = 28 + LABEL_ROWS * LABEL_ROW, foot = 28;
    var overviewH = 170, zoomH = 150, gap = 26;
    var height = head + overviewH + foot + (zoom ? gap + head + zoomH + foot + 14 : 10);
    canvas.style.height = height + "px";
    var width = Math.max(320, canvas.clientWidth || 800), dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.clearRect(0, 0, width, height);
    var left = 60, right = 16, w = width - left - right;
    var box = { x: left, y: head, w: w, h: overviewH };
    drawPanel(ctx, p, box, 0, p.span, "Whole run", zoom ? "" : "time since the first probe", true);
    if (zoom) {
      var y2 = head + overviewH + foot + gap;
      ctx.strokeStyle = "#cbd5e1"; ctx.setLineDash([2, 3]); ctx.beginPath();
      var za = left + zoom[0] / p.span * w, zb = left + zoom[1] / p.span * w;
      ctx.moveTo(za, head + overviewH + 20); ctx.lineTo(left, y2 - 4);
      ctx.moveTo(zb, head + overviewH + 20); ctx.lineTo(left + w, y2 - 4);
      ctx.stroke(); ctx.setLineDash([]);
      drawPanel(ctx, p, { x: left, y: y2 + head, w: w, h: zoomH }, zoom[0], zoom[1],
        "Switch-over (zoom)", "time since the first probe", false);
    }
    return p.plotted;
  }

  var prepared = [];
  function drawAll() {
    var canvases = document.querySelectorAll("canvas.timeline");
    for (var i = 0; i < canvases.length; i++) {
      var canvas = canvases[i], index = +canvas.getAttribute("data-case");
      var entry = DATA.cases[index];
      if (!entry || !entry.timeline) { continue; }
      var started = performance.now();
      if (!prepared[index]) { prepared[index] = prepare(entry.timeline); }
      canvas.setAttribute("data-drawn", String(draw(canvas, prepared[index])));
      canvas.setAttribute("data-draw-ms", (performance.now() - started).toFixed(1));
    }
  }
  drawAll();
  var pending = 0;
  window.addEventListener("resize", function () {
    cancelAnimationFrame(pending); pending = requestAnimationFrame(drawAll);
  });
  document.documentElement.setAttribute("data-report-ready", "yes");
})();
"""
