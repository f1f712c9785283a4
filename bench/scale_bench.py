#!/usr/bin/env python3
"""How a migration's cost grows: guest memory, the guest's dirtying load, queue pairs.

Runs the kernel-driver case one axis at a time from a base point (1 GiB guest, no dirtying
load, 1 queue pair): memory 512 MiB, 2 and 4 GiB; dirtying 16 and 64 MiB/s; 4 queue pairs.
That is 7 points, the base and 3 + 2 + 1 beyond it, not the full grid's 4 x 3 x 2 = 24:
each axis shows its own term, interactions between axes are not measured. The base is 1 GiB,
vhostlm's default. (A 512 MiB guest used to panic, "System is deadlocked on memory": the
guest reserved 512 MiB of hugepages at boot in every case. Now a kernel-driver case reserves
none; a point that errors still says how it ended in its row, once: it is not repeated.)
Per point: QEMU's migration total time, its downtime, the
outage the probes measured and the RAM QEMU sent (plus the case's wall time, Mbit/s,
dirty-sync rounds), the median of --runs runs (2 by default: about 12 minutes here).

How each point runs (vhostlm's own options where it has them):

- memory: `vhostlm run --case virtio_net --guest-mem MB`;
- queues: `vhostlm run --case split_virtio_net_mq4`: `vhostlm run` has no queues option,
  so DTS's multi-queue case (virtio_net with queues=4, mq=on, --rxq/--txq 4, and
  `ethtool -L` 1 then 4 while migrating; split_virtio_net is virtio_net renamed);
- dirtying: `vhostlm run` has no option for it either; a case's spec has one (dirty_mb_s,
  as noconverge/autoconverge use). The bench runs vhostlm's CLI through itself
  (`scale_bench.py _vhostlm N run ...`) with virtio_net copied as `virtio_net_dirtyN`
  (dirty_mb_s=N) added to the catalog: the same flow, with the guest's load (`dd` of N MiB
  of non-zero data over a tmpfs file once a second) started before the migration.

Every point runs with --memcheck-mb 0 (--memcheck-mb changes it): the memory checker would
otherwise own a quarter of the guest's RAM (128 MiB at 512 MiB, 1 GiB at 4 GiB) and rewrite it
at 8 MiB/s, a second load that grows with the memory axis. A point that does not fit the
machine's free memory or the --budget-min time budget is not run, and the table says so.
Writes scale.md (the table) and scale.html (one self-contained page, inline SVG, nothing
external) to --output (default: a new temporary directory, printed), each run's directory
under runs/. Run as root after `make image`: `python bench/scale_bench.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import html
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from common import VHOSTLM, run_vhostlm

BASE_MEM_MB, BASE_DIRTY_MB_S, BASE_QUEUES = 1024, 0, 1  # vhostlm's default guest
MEM_MB = (512, 1024, 2048, 4096)
DIRTY_MB_S = (0, 16, 64)
QUEUES = (1, 4)
BUDGET_MIN = 15.0  # the whole bench, on the 2-core machine it was written on
QEMU_OVERHEAD_MB = 1024  # two QEMUs' own memory (TCG's code buffer, ...) and the testpmds'
CASE, MQ_CASE = "virtio_net", "split_virtio_net_mq4"
AXES = ("memory", "dirty", "queues")
AXIS_TITLES = {
    "memory": "guest memory (MiB; each step doubles)",
    "dirty": "dirtying load (MiB/s)",
    "queues": "queue pairs",
}
# (attribute of Figures, title, unit) of the chart's rows
METRICS = (
    ("total_ms", "QEMU total time", "ms"),
    ("downtime_ms", "QEMU downtime", "ms"),
    ("outage_ms", "measured outage", "ms"),
    ("ram_mib", "RAM sent", "MiB"),
)
HEADER = ("axis", "guest MiB", "dirty MiB/s", "queues", "case", "runs", "verdicts",
          "total ms", "downtime ms", "outage ms", "RAM MiB", "Mbit/s", "sync rounds",
          "case s", "note")  # fmt: skip


@dataclass(frozen=True)
class Point:
    """One point of the bench: which axis it varies and the guest's shape there."""

    axis: str  # "base" or one of AXES
    mem_mb: int = BASE_MEM_MB
    dirty_mb_s: int = BASE_DIRTY_MB_S
    queues: int = BASE_QUEUES

    @property
    def case(self) -> str:
        """The case this point runs."""
        if self.queues > 1:
            return MQ_CASE
        return dirty_name(self.dirty_mb_s) if self.dirty_mb_s else CASE

    def value(self, axis: str) -> int:
        """This point's value on `axis`."""
        return {"memory": self.mem_mb, "dirty": self.dirty_mb_s, "queues": self.queues}[axis]

    def label(self) -> str:
        """A short name for progress lines and run directories."""
        return f"mem{self.mem_mb}-dirty{self.dirty_mb_s}-q{self.queues}"


@dataclass(frozen=True)
class Figures:
    """What one run (or the median of several) measured at a point."""

    total_ms: float  # QEMU's migration total-time
    downtime_ms: float  # QEMU's downtime
    outage_ms: float  # the largest gap between probe replies around the switch-over
    ram_mib: float  # RAM QEMU transferred
    mbps: float
    sync_rounds: float  # dirty-sync rounds
    case_s: float  # the case's wall time


@dataclass
class Row:
    """A point's outcome: its runs' verdicts, the median figures, and why, where none."""

    point: Point
    verdicts: list[str] = field(default_factory=list)
    runs: list[Figures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def figures(self) -> Figures | None:
        """The median of the runs with figures (None: no run gave any)."""
        return median_figures(self.runs)


def dirty_name(mb_s: int) -> str:
    """The name of the virtio_net copy with a dirtying load of `mb_s` MiB/s."""
    return f"{CASE}_dirty{mb_s}"


def panic_line(run_dir: Path) -> str | None:
    """The first guest kernel panic in a run's console logs, if any (why a boot failed)."""
    for log in sorted((run_dir / "logs").glob("console-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "Kernel panic" in line:
                return line[line.index("Kernel panic") :].strip()
    return None


def axis_points(
    mems: Sequence[int] = MEM_MB,
    dirties: Sequence[int] = DIRTY_MB_S,
    queues: Sequence[int] = QUEUES,
) -> list[Point]:
    """The base point, then each axis's other values with the rest at the base: one axis at
    a time, not the full grid. Queues, then dirtying, then memory, biggest last, so a point
    left out for time is the costliest one."""
    base = Point("base")
    points = [base]
    points += [replace(base, axis="queues", queues=q) for q in queues if q != BASE_QUEUES]
    points += [replace(base, axis="dirty", dirty_mb_s=d) for d in dirties if d != BASE_DIRTY_MB_S]
    points += [replace(base, axis="memory", mem_mb=m) for m in sorted(mems) if m != BASE_MEM_MB]
    return points


def case_figures(case: dict[str, Any]) -> Figures | None:
    """A case's figures from its results.json entry; None if its migration did not complete
    (a failed point's partial figures are not a cost)."""
    mig = case.get("migration") or {}
    if mig.get("status") != "completed":
        return None
    measure = case.get("measure") or {}
    return Figures(
        total_ms=float(mig.get("total_time_ms", 0)),
        downtime_ms=float(mig.get("downtime_ms", 0)),
        outage_ms=float(measure.get("outage_ms", 0.0)),
        ram_mib=float(mig.get("ram_transferred_bytes", 0)) / 2**20,
        mbps=float(mig.get("mbps", 0.0)),
        sync_rounds=float(mig.get("dirty_sync_count", 0)),
        case_s=float(case.get("duration_s", 0.0)),
    )


def median_figures(runs: Sequence[Figures]) -> Figures | None:
    """Each figure's median over `runs` (None for none)."""
    if not runs:
        return None
    names = Figures.__dataclass_fields__
    return Figures(**{n: statistics.median(getattr(r, n) for r in runs) for n in names})


def table_cells(row: Row) -> tuple[str, ...]:
    """The table's cells of one row."""
    p, f = row.point, row.figures
    nums = ("-",) * 7
    if f is not None:
        nums = (
            f"{f.total_ms:.0f}", f"{f.downtime_ms:.0f}", f"{f.outage_ms:.1f}",
            f"{f.ram_mib:.1f}", f"{f.mbps:.0f}", f"{f.sync_rounds:.0f}", f"{f.case_s:.1f}",
        )  # fmt: skip
    return (
        p.axis, str(p.mem_mb), str(p.dirty_mb_s), str(p.queues), p.case,
        f"{len(row.runs)}/{len(row.verdicts)}", ",".join(row.verdicts) or "-", *nums,
        "; ".join(row.notes),
    )  # fmt: skip


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table (a header, a rule, a line per row)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = (c.replace("|", "\\|") for c in table_cells(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def nice_max(value: float) -> float:
    """The axis top for `value`: the next 1, 2 or 5 times a power of ten at or above it."""
    if value <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(value))
    return next(step * scale for step in (1, 2, 5, 10) if step * scale >= value)


def y_px(value: float, top_value: float, top: float, bottom: float) -> float:
    """The y pixel of `value` on an axis from 0 (at `bottom`) to `top_value` (at `top`)."""
    return bottom - (bottom - top) * value / top_value


def x_px(index: int, count: int, left: float, right: float) -> float:
    """The x pixel of the index-th of `count` evenly spaced categories between the edges."""
    if count == 1:
        return (left + right) / 2
    return left + (right - left) * index / (count - 1)


PANEL_W, PANEL_H = 330, 200
PAD_L, PAD_R, PAD_T, PAD_B = 56, 16, 26, 40


def axis_series(rows: Sequence[Row], axis: str) -> list[tuple[int, Figures | None]]:
    """The base and the axis's own points, by their value on it: (value, figures)."""
    on_axis = [r for r in rows if r.point.axis in ("base", axis)]
    return sorted(((r.point.value(axis), r.figures) for r in on_axis), key=lambda s: s[0])


def panel_svg(axis: str, metric: str, title: str, unit: str, rows: Sequence[Row]) -> str:
    """One small line chart: `metric` against `axis`, each point labelled with its value;
    a point with no figures is marked n/a on the axis."""
    series = axis_series(rows, axis)
    values = [getattr(f, metric) for _, f in series if f is not None]
    top_v = nice_max(1.1 * max(values, default=0.0))  # room for the labels
    left, right, top, bottom = PAD_L, PANEL_W - PAD_R, PAD_T, PANEL_H - PAD_B
    out = [
        f'<svg class="panel" width="{PANEL_W}" height="{PANEL_H}" '
        f'viewBox="0 0 {PANEL_W} {PANEL_H}" role="img">',
        f"<title>{html.escape(f'{title} ({unit}) against {AXIS_TITLES[axis]}')}</title>",
        f'<text class="pt" x="{left}" y="16">{html.escape(f"{title}, {unit}")}</text>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = y_px(top_v * frac, top_v, top, bottom)
        out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="yl" x="{left - 6}" y="{y + 4:.1f}">{top_v * frac:g}</text>')
    pts: list[tuple[float, float, float]] = []
    for i, (xv, fig) in enumerate(series):
        x = x_px(i, len(series), left + 14, right - 14)
        out.append(f'<text class="xl" x="{x:.1f}" y="{bottom + 16}">{xv}</text>')
        if fig is None:
            out.append(f'<text class="na" x="{x:.1f}" y="{bottom - 6}">n/a</text>')
            continue
        v = float(getattr(fig, metric))
        pts.append((x, y_px(v, top_v, top, bottom), v))
    if len(pts) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)
        out.append(f'<polyline class="ln" points="{path}"/>')
    for x, y, v in pts:
        out.append(f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="3.5"/>')
        out.append(f'<text class="vl" x="{x:.1f}" y="{y - 7:.1f}">{v:.4g}</text>')
    out.append(
        f'<text class="at" x="{(left + right) / 2:.1f}" y="{PANEL_H - 6}">'
        f"{html.escape(AXIS_TITLES[axis])}</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


CHART_CSS = """
.grid-of-panels { display: grid; grid-template-columns: repeat(3, max-content); gap: 10px; }
svg.panel { background: #fff; border: 1px solid var(--line); border-radius: 8px; }
svg .grid { stroke: #e5e7eb; } svg .ln { fill: none; stroke: #2563eb; stroke-width: 2; }
svg circle.pt { fill: #2563eb; } svg text { font: 11px system-ui, sans-serif; fill: #374151; }
svg text.pt { font-weight: 600; font-size: 12px; } svg .yl { text-anchor: end; fill: #6b7280; }
svg .xl, svg .vl, svg .at, svg .na { text-anchor: middle; } svg .na { fill: #b91c1c; }
svg .at { fill: #6b7280; }
"""


def report_css() -> str:
    """The run report's stylesheet (vhostlm.report's static/report.css), for the same look;
    '' when the package has none."""
    try:
        return (resources.files("vhostlm.report") / "static" / "report.css").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return ""


def chart_html(rows: Sequence[Row], heading: str, notes: Sequence[str]) -> str:
    """The self-contained page: one panel per metric and axis (inline SVG, no script, no
    external resource), the table below it."""
    panels = [
        panel_svg(axis, metric, title, unit, rows)
        for metric, title, unit in METRICS
        for axis in AXES
    ]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in table_cells(r)) + "</tr>"
        for r in rows
    )
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(heading)}</title>"
        f"<style>{report_css()}{CHART_CSS}</style></head><body><main>"
        f'<div class="card"><h1>{html.escape(heading)}</h1><ul>{notes_html}</ul></div>'
        f'<div class="card"><div class="grid-of-panels">{"".join(panels)}</div></div>'
        f'<div class="card"><table><tr>{head}</tr>{body}</table></div>'
        "</main></body></html>\n"
    )


def needed_mb(mem_mb: int) -> int:
    """Host memory a point needs: hugepages for two guests and two vhost testpmds (the
    run's own budget), plus the QEMUs' own."""
    from vhostlm.backends.testpmd import TESTPMD_MB
    from vhostlm.beds import Budget

    return 2 * Budget(mem_mb, TESTPMD_MB).lab_pages() + QEMU_OVERHEAD_MB


def available_mb(meminfo: str) -> int:
    """MemAvailable plus free hugepages, MiB, from /proc/meminfo's text."""
    fields = {k.strip(): v.split() for k, v in (ln.split(":", 1) for ln in meminfo.splitlines())}
    avail_kb = int(fields["MemAvailable"][0])
    free_pages = int(fields.get("HugePages_Free", ["0"])[0])
    size_kb = int(fields.get("Hugepagesize", ["2048"])[0])
    return (avail_kb + free_pages * size_kb) // 1024


def run_args(point: Point, memcheck_mb: int) -> list[str]:
    """The `vhostlm run` options of a point (the output directory aside)."""
    return ["--case", point.case, "--guest-mem", str(point.mem_mb),
            "--memcheck-mb", str(memcheck_mb)]  # fmt: skip


def command(point: Point) -> tuple[str, ...]:
    """How the point's run is started: vhostlm itself, or through this file for a load."""
    if point.dirty_mb_s:
        return (sys.executable, str(Path(__file__).resolve()), "_vhostlm", str(point.dirty_mb_s))
    return VHOSTLM


def register_dirty_case(mb_s: int) -> Any:
    """Add virtio_net copied as virtio_net_dirtyN (a dirtying load of N MiB/s in the guest)
    to this process's catalog of cases; the copy (a CaseSpec)."""
    from vhostlm.plans import catalog
    from vhostlm.plans.seed import VIRTIO_NET

    spec = replace(VIRTIO_NET, name=dirty_name(mb_s), dirty_mb_s=mb_s)
    catalog.PLANS["all"].append(spec)
    return spec


def launch(argv: list[str]) -> int:
    """`_vhostlm N ARGS...`: vhostlm's CLI with ARGS, virtio_net_dirtyN in its catalog."""
    from vhostlm.cli import main as vhostlm_main

    register_dirty_case(int(argv[0]))
    return vhostlm_main(argv[1:])


def estimate_s(point: Point, rows: dict[Point, list[float]], base: Point) -> float:
    """Expected wall time of a run at `point`: its own earlier runs' mean, else the base's
    scaled by the guest's memory (boot and migration both grow with it, at most linearly)."""
    if rows.get(point):
        return statistics.mean(rows[point])
    walls = rows.get(base) or [60.0]
    return statistics.mean(walls) * max(1.0, point.mem_mb / base.mem_mb)


def main() -> int:
    """Run every point --runs times, print the table, write scale.md and scale.html."""
    if sys.argv[1:2] == ["_vhostlm"]:
        return launch(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2, help="runs per point (median)")
    parser.add_argument("--output", type=Path, help="where to write (default: a new temp dir)")
    parser.add_argument(
        "--budget-min", type=float, default=BUDGET_MIN,
        help="skip (and say so) a point that would end the bench later",
    )  # fmt: skip
    parser.add_argument("--memcheck-mb", type=int, default=0, help="passed to every run")
    parser.add_argument("--mem", default=",".join(map(str, MEM_MB)), help="MiB, comma-separated")
    args = parser.parse_args()
    out = args.output or Path(tempfile.mkdtemp(prefix="vhostlm-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"output: {out}", flush=True)
    points = axis_points(mems=[int(m) for m in args.mem.split(",")])
    base = points[0]
    print(
        f"{len(points)} points, one axis at a time from {base.mem_mb} MiB / "
        f"{base.dirty_mb_s} MiB/s / {base.queues} queue: the base and "
        f"{len(points) - 1} beyond it, not the full grid; {args.runs} run(s) each",
        flush=True,
    )
    rows = {p: Row(p) for p in points}
    walls: dict[Point, list[float]] = {}
    start = time.monotonic()
    for i in range(args.runs):
        for p in points:
            row = rows[p]
            if "error" in row.verdicts:
                continue  # its error is the finding; its boot timeout would only cost time
            elapsed = time.monotonic() - start
            guess = estimate_s(p, walls, base)
            if elapsed + guess > args.budget_min * 60:
                row.notes.append(
                    f"run {i + 1} not run: about {guess:.0f} s more would pass the "
                    f"{args.budget_min:g} min budget ({elapsed:.0f} s used)"
                )
                continue
            need, have = needed_mb(p.mem_mb), available_mb(Path("/proc/meminfo").read_text())
            if need > have:
                row.notes.append(f"run {i + 1} not run: needs ~{need} MiB, {have} MiB free")
                continue
            where = out / "runs" / f"{p.label()}-{i + 1}"
            run = run_vhostlm(run_args(p, args.memcheck_mb), where, command(p))
            walls.setdefault(p, []).append(run.wall_s)
            case = (run.results or {}).get("cases", [{}])[0]
            row.verdicts.append(str(case.get("verdict", f"rc={run.returncode}")))
            fig = case_figures(case) if case else None
            if fig is not None:
                row.runs.append(fig)
            if case.get("reason") or run.results is None:
                why = case.get("reason") or run.stderr.strip()[-200:]
                row.notes.append(f"run {i + 1}: {why[:200]}")
                panic = panic_line(where)
                if panic:
                    row.notes.append(f"guest console: {panic}")
            print(
                f"[{time.monotonic() - start:6.0f} s] {p.axis:>6} {p.label():<24} "
                f"{row.verdicts[-1]:<5} wall {run.wall_s:5.1f} s  {where}",
                flush=True,
            )
    took = time.monotonic() - start
    notes = [
        f"{len(points)} points, one axis at a time from the base ({base.mem_mb} MiB, "
        f"{base.dirty_mb_s} MiB/s, {base.queues} queue pair): the base and "
        f"{len(points) - 1} beyond it, not the 4 x 3 x 2 = 24 of the full grid",
        f"median of {args.runs} run(s) per point; --memcheck-mb {args.memcheck_mb}; "
        f"queues via {MQ_CASE}; dirtying via {dirty_name(16)}-style copies of {CASE}",
        f"the bench took {took:.0f} s",
    ]
    table = markdown_table(list(rows.values()))
    print("\n" + table + "\n".join(notes))
    (out / "scale.md").write_text(table + "\n" + "".join(f"- {n}\n" for n in notes))
    page = chart_html(list(rows.values()), "vhostlm: how migration cost grows", notes)
    (out / "scale.html").write_text(page)
    print(f"\ntable: {out / 'scale.md'}\nchart: {out / 'scale.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
