"""The outage explained: the moments of one switch-over in time order and the segments
between them, in ms. Pure functions over epoch seconds on the controller's clock.

The moments are the last reply before the outage and the first reply after it (its edges,
from the probe stream), the source's STOP and the destination's RESUME (QMP events), the
moment the destination's vhost backend said the guest's virtio device was ready (the
arrival of that line of its log) and the announce seen on the destination's switch port.

They are put in the order they happened, not in the order they "should": a ready line
before RESUME, or a last reply that arrived after STOP (a reply the source's backend
forwarded late), is shown where it was. Each segment runs from one moment to the next and
is named by what ends it ("until the backup's vhost ring was enabled"); STOP to RESUME is
"QEMU stop-to-resume". The edges of the outage are moments themselves, so a segment lies
wholly inside the outage or wholly outside it; those inside add up to the outage, less
the rounding of each to a microsecond. A moment that is not known is left out (its
neighbours' segments merge) and listed as missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# the moments, in the order a switch-over is expected to pass them (ties sort this way)
MOMENTS = ("last_reply", "stop", "resume", "ready", "first_reply", "announce")
# the marks of a leg (`Traffic.legs`) that are moments, under the same names
MARK_MOMENTS = ("stop", "resume", "ready", "announce")
# causality: each may not come before the one before it (the destination cannot resume
# before the source stopped, nor answer before its backend is ready)
CHAIN = ("stop", "resume", "ready", "first_reply")


@dataclass(frozen=True)
class Moment:
    """One moment of the switch-over: its name, when (epoch s), and ms after the outage's
    start (the last reply; without an outage, after the first moment)."""

    name: str
    at: float
    ms: float


@dataclass(frozen=True)
class Segment:
    """The time from one moment to the next, in ms, named by what ends it."""

    start: str
    end: str
    ms: float
    label: str
    in_outage: bool


@dataclass(frozen=True)
class Breakdown:
    """One migration's outage broken down; `as_dict` is what results.json keeps."""

    to: str  # the destination role (whose RESUME, backend and switch port)
    moments: list[Moment]
    segments: list[Segment]
    outage_ms: float | None  # first reply - last reply; None without probes
    sum_ms: float  # the segments inside the outage (all of them without one), as rounded
    difference_ms: float | None  # sum_ms - outage_ms
    uncertainty_ms: float | None  # the outage's (`outage_uncertainty_ms`)
    within_uncertainty: bool | None  # |difference| <= uncertainty
    biggest: Segment | None  # of the segments summed
    missing: list[str] = field(default_factory=list)  # moments not known
    outside: list[str] = field(default_factory=list)  # moments before or after the outage
    out_of_order: list[str] = field(default_factory=list)  # "ready before resume"
    ready_line: str = ""  # the backend's line that gave `ready`

    def as_dict(self) -> dict[str, Any]:
        """Plain data for results.json (a leg's `breakdown`)."""
        return asdict(self)


def moment_times(
    marks: Mapping[str, float], outage: tuple[float, float] | None, ready: float | None = None
) -> dict[str, float]:
    """The known moments by name from a leg's marks, its outage edges and the backend's
    ready time (which overrides a "ready" mark). Marks that are not moments are ignored."""
    times = {k: float(marks[k]) for k in MARK_MOMENTS if k in marks}
    if ready is not None:
        times["ready"] = float(ready)
    if outage is not None:
        times["last_reply"], times["first_reply"] = float(outage[0]), float(outage[1])
    return times


def ordered(times: Mapping[str, float]) -> list[tuple[str, float]]:
    """(name, time) by time; moments at the same time in the expected order (MOMENTS)."""
    rank = {name: i for i, name in enumerate(MOMENTS)}
    return sorted(times.items(), key=lambda item: (item[1], rank.get(item[0], len(rank))))


def segment_label(start: str, end: str, dest: str = "backup") -> str:
    """What a segment is called after its ms: by the moment that ends it, and STOP to
    RESUME as QEMU's ("12 ms QEMU stop-to-resume")."""
    if (start, end) == ("stop", "resume"):
        return "QEMU stop-to-resume"
    return {
        "last_reply": "until the last reply",
        "stop": "until the source's STOP",
        "resume": f"until the {dest}'s RESUME",
        "ready": f"until the {dest}'s vhost ring was enabled",
        "first_reply": "to the first reply",
        "announce": "until the announce",
    }.get(end, f"until {end}")


def segments_of(
    moments: Sequence[tuple[str, float]], outage: tuple[float, float] | None, dest: str = "backup"
) -> list[Segment]:
    """The segments between consecutive `moments` (in time order); a segment is inside the
    outage when it lies within its edges."""
    found = []
    for (a, ta), (b, tb) in zip(moments, moments[1:], strict=False):
        inside = outage is not None and outage[0] <= ta and tb <= outage[1]
        found.append(Segment(a, b, round((tb - ta) * 1000, 3), segment_label(a, b, dest), inside))
    return found


def biggest(segments: Sequence[Segment]) -> Segment | None:
    """The longest segment (the first of equals), None of none."""
    return max(segments, key=lambda s: s.ms, default=None)


def out_of_order(times: Mapping[str, float]) -> list[str]:
    """Pairs of the causal chain (CHAIN) that happened the other way round, as
    "ready before resume"; each known moment is compared with the next known one."""
    known = [name for name in CHAIN if name in times]
    return [
        f"{b} before {a}" for a, b in zip(known, known[1:], strict=False) if times[b] < times[a]
    ]


def breakdown(
    marks: Mapping[str, float],
    outage: tuple[float, float] | None,
    ready: float | None = None,
    uncertainty_ms: float | None = None,
    dest: str = "backup",
    ready_line: str = "",
) -> Breakdown:
    """The breakdown of one migration from its marks (epoch s: "stop", "resume",
    "announce", perhaps "ready"), its outage edges (last reply, first reply; None without
    probes), the destination backend's ready time and the outage's uncertainty (ms)."""
    times = moment_times(marks, outage, ready)
    order = ordered(times)
    origin = outage[0] if outage is not None else (order[0][1] if order else 0.0)
    moments = [Moment(name, at, round((at - origin) * 1000, 3)) for name, at in order]
    segments = segments_of(order, outage, dest)
    summed = [s for s in segments if s.in_outage] if outage is not None else segments
    total = round(sum(s.ms for s in summed), 3)
    outage_ms = round((outage[1] - outage[0]) * 1000, 3) if outage is not None else None
    difference = round(total - outage_ms, 3) if outage_ms is not None else None
    within = (
        abs(difference) <= uncertainty_ms
        if difference is not None and uncertainty_ms is not None
        else None
    )
    outside = (
        [m.name for m in moments if not outage[0] <= m.at <= outage[1]]
        if outage is not None
        else []
    )
    return Breakdown(
        to=dest,
        moments=moments,
        segments=segments,
        outage_ms=outage_ms,
        sum_ms=total,
        difference_ms=difference,
        uncertainty_ms=uncertainty_ms,
        within_uncertainty=within,
        biggest=biggest(summed),
        missing=[name for name in MOMENTS if name not in times],
        outside=outside,
        out_of_order=out_of_order(times),
        ready_line=ready_line,
    )
