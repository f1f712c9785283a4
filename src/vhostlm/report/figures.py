"""The key figures of a case and their human strings, shared by the HTML, JUnit and summary.

One place decides what a figure is called, its unit and how it is printed (durations, MiB,
outage window), so the three reports never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vhostlm.report.results import CaseResult

MIB = 1024 * 1024


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


def mib(n_bytes: float) -> float:
    """Bytes in MiB (2**20), as every report shows RAM transferred."""
    return n_bytes / MIB


def seconds_text(seconds: float) -> str:
    """A step's or case's duration as "5.5 s" (one decimal)."""
    return f"{seconds:.1f} s"


def duration_text(seconds: float) -> str:
    """A duration for headings: "42.9 s" below two minutes, else "66 min 40 s"."""
    if seconds < 120:
        return seconds_text(seconds)
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s"


def when_text(iso: str) -> str:
    """ISO 8601 as "2025-11-26 10:00:00 +01:00"; the text as is when it is not ISO."""
    try:
        stamp = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    offset = stamp.strftime("%z")
    zone = f" {offset[:3]}:{offset[3:]}" if offset else ""
    return stamp.strftime("%Y-%m-%d %H:%M:%S") + zone


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
            None if ram is None else mib(ram),
            "MiB",
        ),
        FigureRow("migration", "mbps", "throughput", pick("mbps", m.mbps), "Mbit/s"),
        FigureRow(
            "migration",
            "dirty_sync_count",
            "dirty-sync rounds",
            pick("dirty_sync_count", m.dirty_sync_count),
        ),
        FigureRow(
            "migration",
            "postcopy_requests",
            "postcopy page requests",
            pick("postcopy_requests", m.postcopy_requests),
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
        FigureRow("measure", "outage_window", "outage window", outage_window(measure)),
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
    return rows + _quality_rows(measure)


def _quality_rows(measure: dict[str, Any]) -> list[FigureRow]:
    """What the outage figure is worth and the tester's own health (outage.StreamFigures)."""
    noise, lag = sub_object(measure, "noise_ms"), sub_object(measure, "receive_lag_ms")

    def row(key: str, label: str, value: Any, unit: str = "") -> FigureRow:
        return FigureRow("measure", key, label, number(value), unit)

    return [
        row("outage_uncertainty_ms", "outage uncertainty (±)",
            measure.get("outage_uncertainty_ms"), "ms"),
        row("noise_p99_ms", "reply-gap noise p99 (before migrate)", noise.get("p99"), "ms"),
        row("noise_max_ms", "reply-gap noise max (before migrate)", noise.get("max"), "ms"),
        row("precopy_max_gap_ms", "largest reply gap in the precopy",
            measure.get("precopy_max_gap_ms"), "ms"),
        row("send_gap_ms", "largest tester send gap in the outage",
            measure.get("send_gap_ms"), "ms"),
        row("tester_drops", "tester receive drops", measure.get("tester_drops")),
        row("lost_during_precopy", "probes lost in the precopy",
            measure.get("lost_during_precopy")),
        row("lost_outside_window", "probes lost outside the switch-over",
            measure.get("lost_outside_window")),
        row("receive_lag_p99_ms", "tester receive lag p99", lag.get("p99"), "ms"),
        row("receive_lag_max_ms", "tester receive lag max", lag.get("max"), "ms"),
    ]  # fmt: skip


# what a moment of the outage breakdown is called in a sentence
MOMENT_WORDS = {
    "last_reply": "the last reply",
    "stop": "STOP",
    "resume": "RESUME",
    "ready": "the vhost ring enabled",
    "first_reply": "the first reply",
    "announce": "the announce",
}


def case_breakdowns(case: CaseResult) -> list[tuple[str, dict[str, Any]]]:
    """(title, breakdown) of each migration of the case ("migration 1 → backup"); the top
    level's when no leg has one. Breakdowns that are not objects are left out."""
    measure = case_measure(case)
    legs = measure.get("legs")
    found: list[tuple[str, dict[str, Any]]] = []
    for n, leg in enumerate(legs if isinstance(legs, list) else []):
        if isinstance(leg, dict) and isinstance(leg.get("breakdown"), dict):
            bd = leg["breakdown"]
            found.append((f"migration {n + 1} → {bd.get('to') or leg.get('to') or '?'}", bd))
    top = sub_object(measure, "breakdown")
    if not found and top:
        found.append((f"migration 1 → {top.get('to') or '?'}", top))
    return found


def breakdown_segments(bd: dict[str, Any]) -> list[dict[str, Any]]:
    """The breakdown's segments that are well-formed (a number of ms and a label)."""
    raw = bd.get("segments")
    return [
        s
        for s in (raw if isinstance(raw, list) else [])
        if isinstance(s, dict)
        and number(s.get("ms")) is not None
        and isinstance(s.get("label"), str)
    ]


def breakdown_text(bd: dict[str, Any]) -> str | None:
    """The outage in words, its biggest segment named: "outage 84.0 ms: 12.0 ms QEMU
    stop-to-resume, 61.0 ms until the backup's vhost ring was enabled, 11.0 ms to the first
    reply; the biggest: 61.0 ms until ..."; moments outside it after that. Without probes
    the switch-over's segments ("switch-over: ..."). None without segments."""
    outage = number(bd.get("outage_ms"))
    segments = breakdown_segments(bd)
    shown = [s for s in segments if s.get("in_outage")] if outage is not None else segments
    if not shown:
        return None
    parts = ", ".join(f"{float(s['ms']):.1f} ms {s['label']}" for s in shown)
    head = f"outage {outage:.1f} ms" if outage is not None else "switch-over"
    text = f"{head}: {parts}"
    big = max(shown, key=lambda s: float(s["ms"]))
    if len(shown) > 1:
        text += f"; the biggest: {float(big['ms']):.1f} ms {big['label']}"
    outside = _outside_words(bd, outage)
    return text + (f" ({outside})" if outside else "")


def _outside_words(bd: dict[str, Any], outage: float | int | None) -> str:
    """The moments outside the outage, as "STOP 20.9 ms before the last reply"."""
    if outage is None:
        return ""
    raw = bd.get("moments")
    words = []
    for m in raw if isinstance(raw, list) else []:
        at = number(m.get("ms")) if isinstance(m, dict) else None
        if at is None or 0 <= at <= outage:
            continue
        name = MOMENT_WORDS.get(str(m.get("name")), str(m.get("name")))
        if at < 0:
            words.append(f"{name} {-at:.1f} ms before the last reply")
        else:
            words.append(f"{name} {at - outage:.1f} ms after the first reply")
    return ", ".join(words)


def outage_window(measure: dict[str, Any]) -> str | None:
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
