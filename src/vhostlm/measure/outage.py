"""Loss and outage of a probe stream: pure functions over send and reply times.

The outage is what traffic saw: the largest gap between consecutive replies (the stream's
start and end count as edges, so loss at either end and a stream that never recovers are
gaps too). With a window (the switch-over of a migration), only gaps that overlap it are
considered.

Beside the figure, what it is worth: the noise floor (the reply gaps of the steady stream
before the migration), the outage's uncertainty, whether the tester itself stopped sending
during it (`send_gap_ms`), and how many replies the tester's own receive socket dropped
(`tester_drops`): neither of the last two is the guest's doing.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vhostlm.measure.probe import achieved_rate

STALL_INTERVALS = 3  # a send gap longer than this many probe intervals is a tester stall
MARGIN_INTERVALS = 3  # the window opens this many intervals (plus the noise p99) before STOP
RATE_BEHIND = 0.95  # a tester that sent less than this share of the rate asked fell behind


@dataclass(frozen=True)
class StreamFigures:
    """What one probe stream says about the path through the guest."""

    sent: int
    replies: int
    lost: int
    duplicates: int
    reordered: int
    outage_ms: float
    outage_start: float
    outage_end: float
    resolution_ms: float
    lost_outside_window: int
    noise_ms: dict[str, float] = field(default_factory=dict)  # {p99, max} before migrate
    send_gap_ms: float = 0.0  # the largest gap between sends overlapping the outage
    send_gap_edges_ms: list[float] = field(default_factory=list)  # [at its start, end]
    outage_uncertainty_ms: float = 0.0  # the true outage is in [outage - this, outage]
    below_noise: bool = False  # the outage is no larger than a steady-state gap
    precopy_max_gap_ms: float | None = None  # migrate -> STOP - margin, apart from it
    tester_drops: int = 0  # replies the tester's receive socket dropped, all stream long
    tester_drops_in_window: int = 0  # of those, in a span touching an outage window
    lost_outside_at: list[float] = field(default_factory=list)  # their send times (20)
    # lost while the precopy ran (migrate -> window): the migration's doing (its CPU and
    # a throttled guest under auto-converge), reported, not counted as unexplained loss
    lost_during_precopy: int = 0
    achieved_pps: float = 0.0  # probes/s actually sent, first to last probe
    window_pps: float = 0.0  # of those, inside the outage's window

    def as_dict(self) -> dict[str, Any]:
        """Plain data for results.json."""
        return asdict(self)


@dataclass(frozen=True)
class EdgeFigures:
    """What one outage gap is worth: the figures `analyse` adds to it, per window."""

    send_gap_ms: float
    send_gap_edges_ms: list[float]
    outage_uncertainty_ms: float
    below_noise: bool
    precopy_max_gap_ms: float | None
    tester_drops_in_window: int
    window_pps: float = 0.0  # probes/s actually sent inside the window

    def as_dict(self) -> dict[str, Any]:
        """Plain data for results.json (a leg's figures)."""
        return asdict(self)


def count_duplicates_reordered(seqs: Sequence[int]) -> tuple[int, int]:
    """(duplicates, reordered) of replies in arrival order.

    A duplicate is a sequence number seen before; a reordered reply arrives after one
    with a higher sequence number.
    """
    seen: set[int] = set()
    duplicates = reordered = 0
    highest = -1
    for seq in seqs:
        if seq in seen:
            duplicates += 1
            continue
        seen.add(seq)
        if seq < highest:
            reordered += 1
        highest = max(highest, seq)
    return duplicates, reordered


def _overlaps(a: float, b: float, span: tuple[float, float]) -> bool:
    return not (b < span[0] or a > span[1])


def largest_gap(
    times: Sequence[float],
    start: float,
    end: float,
    window: tuple[float, float] | None = None,
    avoid: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """(gap start, gap end) of the largest gap between `start`, sorted `times` and `end`.

    With `window`, only gaps overlapping it count (a gap wholly before or after is normal
    traffic, not the migration's outage); a gap overlapping `avoid` never counts.
    """
    edges = [start, *sorted(times), max(end, times[-1] if times else end)]
    best = (start, start)
    for a, b in zip(edges, edges[1:], strict=False):
        if window is not None and not _overlaps(a, b, window):
            continue
        if avoid is not None and _overlaps(a, b, avoid):
            continue
        if b - a > best[1] - best[0]:
            best = (a, b)
    return best


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile of `values` (0.0 for none): a value seen."""
    if not values:
        return 0.0
    ranked = sorted(values)
    rank = max(1, -(-len(ranked) * q // 100))  # ceil(n q / 100), at least the first
    return ranked[int(rank) - 1]


def _inside(a: float, b: float, spans: Sequence[tuple[float, float]]) -> bool:
    """The gap (a, b) shares more than an edge with one of `spans`."""
    return any(a < hi and b > lo for lo, hi in spans)


def noise_floor(
    times: Sequence[float], until: float | None, quiet: Sequence[tuple[float, float]] = ()
) -> dict[str, float]:
    """{p99, max} in ms of the gaps between consecutive replies arriving before `until`
    (the steady stream before the first migrate; None: the whole stream), leaving out the
    gaps inside `quiet` spans (a backend restarted on purpose: no steady stream there).

    Under TCG the guest answers in bursts (a vCPU runs a time slice, then another), so
    this is far above the probe interval: a gap no larger is not a measured outage."""
    steady = sorted(t for t in times if until is None or t < until)
    gaps = [
        (b - a) * 1000.0
        for a, b in zip(steady, steady[1:], strict=False)
        if not _inside(a, b, quiet)
    ]
    return {"p99": round(percentile(gaps, 99), 3), "max": round(max(gaps, default=0.0), 3)}


def send_gap(send_ts: Sequence[float], span: tuple[float, float]) -> float:
    """The largest gap (s) between consecutive sends that overlaps `span`."""
    best = 0.0
    for a, b in zip(send_ts, send_ts[1:], strict=False):
        if b - a > best and _overlaps(a, b, span):
            best = b - a
    return best


def resumed_at(marks: dict[str, float]) -> float | None:
    """When the guest could first answer on the destination: its RESUME, or the
    destination backend's ring (`ready`) if that was enabled later; None without a RESUME."""
    if "resume" not in marks:
        return None
    return max(marks["resume"], marks.get("ready", marks["resume"]))


def switch_window(
    marks: dict[str, float], first: float, last: float, pps: float, noise_p99_ms: float,
    settle_s: float,
) -> tuple[tuple[float, float], tuple[float, float] | None]:  # fmt: skip
    """(outage window, precopy span or None) of one migration from its marks.

    The window is [source STOP - margin, destination RESUME + settle]: the guest can only
    be cut off around the switch-over, so a hiccup during the precopy (seconds long, the
    guest running on the source) is reported apart, never taken for the outage. The margin,
    MARGIN_INTERVALS probe intervals plus the noise p99, keeps the last replies before
    STOP (still on their way back, or late in a burst) inside. Without a STOP (cancelled,
    failed) the window is the whole migration, as before: [migrate, end + settle].
    Postcopy (a `postcopy-active` mark): the destination runs before it holds every page,
    and each page its guest or backend faults on waits for the source, so replies may
    stall until `completed`: the window runs to completion. The destination backend's
    ring enabled after RESUME (a `ready` mark later than `resume`): the guest cannot answer
    there before it, and the probes queued meanwhile arrive at once, so the settle runs
    from it (seen: ready 1.12 s after RESUME, then 22 probes of that backlog lost 0.36 s
    after RESUME + settle)."""
    margin = MARGIN_INTERVALS / pps + noise_p99_ms / 1000.0 if pps > 0 else 0.0
    resumed = resumed_at(marks)
    end = resumed if resumed is not None else marks.get("cancelled", marks.get("completed", last))
    if "postcopy-active" in marks and "completed" in marks:
        end = max(end, marks["completed"])
    migrate = marks.get("migrate", first)
    if "stop" not in marks:
        return (migrate, end + settle_s), None
    start = marks["stop"] - margin
    precopy = (migrate, start) if start > migrate else None
    return (start, end + settle_s), precopy


def rate_in(send_ts: Sequence[float], span: tuple[float, float]) -> float:
    """Probes per second actually sent inside `span` (sorted `send_ts`)."""
    lo = bisect.bisect_left(send_ts, span[0])
    hi = bisect.bisect_right(send_ts, span[1])
    return achieved_rate(send_ts[lo:hi])


def _send_after(send_ts: Sequence[float], seq: int) -> float:
    """The gap (s) from probe `seq`'s send to the next probe's (0 past either end)."""
    return send_ts[seq + 1] - send_ts[seq] if 0 <= seq < len(send_ts) - 1 else 0.0


def edge_figures(
    send_ts: Sequence[float],
    ordered: Sequence[tuple[float, int]],
    gap: tuple[float, float],
    window: tuple[float, float],
    precopy: tuple[float, float] | None,
    noise: dict[str, float],
    pps: float,
    drops: Sequence[Sequence[float]] = (),
) -> EdgeFigures:
    """What the outage `gap` (picked in `window`) is worth; `ordered`: (arrival, seq) of
    the valid replies, by arrival.

    Let probe j be the last answered before the gap and k the first answered after it.
    The path broke after j's request passed, before j+1's: somewhere in one send gap
    e_start = s(j+1) - s(j). When k was answered at once (a round trip within the noise
    p99 plus an interval), the path mended somewhere in e_end = s(k) - s(k-1); when k was
    held across the switch-over and answered as the guest ran again (what vhost-user does
    with requests queued in the ring), the guest set the end and e_end = 0. The measured
    gap G = r(k) - r(j) therefore exceeds the true outage T by at most e_start + e_end
    plus the round trips' difference, which in steady state stays within the noise p99
    (the guest answers in bursts under TCG: a reply waits up to one burst period). Hence
    `outage_uncertainty_ms` = max(interval, e_start) + max(interval, e_end) + noise p99:
    T is G within that. Each edge's send gap is also returned (`send_gap_edges_ms`): a
    tester that stalled there moved the edge by as much (a stall in the middle of the gap
    does not: the probes after it were still unanswered). `send_gap_ms` is the largest
    send gap anywhere in the gap. The outage is `below_noise` when G is no larger than
    the largest gap the steady stream showed with no migration at all (noise max): it
    cannot be told from the noise. `drops`: the tester's receive drops as [since, until,
    count] spans; those touching `window` are counted."""
    interval = 1.0 / pps if pps > 0 else 0.0
    times = [t for t, _ in ordered]
    lo = bisect.bisect_right(times, gap[0]) - 1  # the reply at the gap's start, if any
    hi = bisect.bisect_left(times, gap[1])  # the reply at its end, if any
    before = max((s for _, s in ordered[: lo + 1]), default=-1) if lo >= 0 else -1
    e_start = _send_after(send_ts, before) if before >= 0 else 0.0
    e_end = 0.0
    if hi < len(ordered):
        arrival, k = ordered[hi]
        # a request answered at once set the gap's end (sent late, it ended it late); one
        # held across the switch-over and answered when the guest ran again did not
        prompt = arrival - send_ts[k] <= max(interval, noise.get("p99", 0.0) / 1000) + interval
        e_end = _send_after(send_ts, k - 1) if prompt else 0.0
    outage_ms = round((gap[1] - gap[0]) * 1000.0, 3)  # as reported, as the noise is
    precopy_ms = None
    if precopy is not None:
        pre = largest_gap(times, send_ts[0], send_ts[-1], precopy, avoid=window)
        precopy_ms = round((pre[1] - pre[0]) * 1000.0, 3)
    in_window = sum(int(n) for a, b, n in drops if _overlaps(a, b, window))
    uncertainty = max(interval, e_start) + max(interval, e_end) + noise.get("p99", 0.0) / 1000
    return EdgeFigures(
        send_gap_ms=round(send_gap(send_ts, gap) * 1000.0, 3),
        send_gap_edges_ms=[round(e_start * 1000.0, 3), round(e_end * 1000.0, 3)],
        outage_uncertainty_ms=round(uncertainty * 1000.0, 3),
        below_noise=outage_ms <= noise.get("max", 0.0),
        precopy_max_gap_ms=precopy_ms,
        tester_drops_in_window=in_window,
        window_pps=round(rate_in(send_ts, window), 1),
    )


def analyse(
    send_ts: Sequence[float],
    replies: Sequence[tuple[int, float]],
    pps: float,
    windows: Sequence[tuple[float, float]] = (),
    *,
    baseline_end: float | None = None,
    precopy: Sequence[tuple[float, float] | None] = (),
    drops: Sequence[Sequence[float]] = (),
    tester_drops: int | None = None,
    quiet: Sequence[tuple[float, float]] = (),
) -> StreamFigures:
    """Figures of a stream: probes sent at `send_ts`, replies as (seq, arrival) in order.

    With `windows` (one per migration), the outage is the largest gap overlapping any of
    them and `lost_outside_window` counts probes lost outside all of them (and outside the
    outage gaps, less a noise p99 before each: a request sent then was answered in it).
    `baseline_end`: the first migrate (the noise floor is the replies before it; None:
    the whole stream); `precopy`: each window's precopy span; `drops`: the tester's receive
    drops as [since, until, count]; `tester_drops`: their total (default: their sum);
    `quiet`: reply gaps of a backend restarted on purpose (`measure.reconnect`): not noise,
    and their lost probes are not unexplained (the reconnect reports them).
    """
    resolution_ms = 1000.0 / pps if pps > 0 else 0.0
    sent = len(send_ts)
    valid = [(s, t) for s, t in replies if 0 <= s < sent]
    duplicates, reordered = count_duplicates_reordered([s for s, _ in valid])
    answered = {s for s, _ in valid}
    lost = sent - len(answered)
    total_drops = int(sum(n for _, _, n in drops)) if tester_drops is None else tester_drops
    if sent == 0:
        return StreamFigures(
            0, 0, 0, duplicates, reordered, 0.0, 0.0, 0.0, resolution_ms, 0,
            tester_drops=total_drops,
        )  # fmt: skip
    ordered = sorted((t, s) for s, t in valid)
    times = [t for t, _ in ordered]
    noise = noise_floor(times, baseline_end, quiet)
    edges = (send_ts[0], send_ts[-1])
    spans: list[tuple[float, float] | None] = [*windows] or [None]
    gaps = [largest_gap(times, *edges, w) for w in spans]
    pick = max(range(len(gaps)), key=lambda i: gaps[i][1] - gaps[i][0])
    gap = gaps[pick]
    window = spans[pick] or (edges[0], edges[1])
    pre = precopy[pick] if pick < len(precopy) else None
    edge = edge_figures(send_ts, ordered, gap, window, pre, noise, pps, drops)
    lead = max(resolution_ms, noise["p99"]) / 1000.0
    covered = [*windows, *((a - lead, b) for a, b in (*gaps, *quiet))] if windows else []
    unexplained = [
        ts
        for seq, ts in enumerate(send_ts)
        if seq not in answered and covered and not any(lo <= ts <= hi for lo, hi in covered)
    ]
    spans_pre = [p for p in precopy if p is not None]
    outside = [t for t in unexplained if not any(lo <= t <= hi for lo, hi in spans_pre)]
    return StreamFigures(
        sent=sent,
        replies=len(valid) - duplicates,
        lost=lost,
        duplicates=duplicates,
        reordered=reordered,
        outage_ms=round((gap[1] - gap[0]) * 1000.0, 3),
        outage_start=gap[0],
        outage_end=gap[1],
        resolution_ms=round(resolution_ms, 3),
        lost_outside_window=len(outside),
        noise_ms=noise,
        send_gap_ms=edge.send_gap_ms,
        send_gap_edges_ms=edge.send_gap_edges_ms,
        outage_uncertainty_ms=edge.outage_uncertainty_ms,
        below_noise=edge.below_noise,
        precopy_max_gap_ms=edge.precopy_max_gap_ms,
        tester_drops=total_drops,
        tester_drops_in_window=sum(
            int(n) for a, b, n in drops if any(_overlaps(a, b, w) for w in windows)
        )
        if windows
        else total_drops,
        lost_outside_at=[round(t, 6) for t in outside[:20]],
        lost_during_precopy=len(unexplained) - len(outside),
        achieved_pps=round(achieved_rate(send_ts), 1),
        window_pps=edge.window_pps,
    )
