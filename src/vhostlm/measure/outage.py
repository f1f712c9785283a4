"""Loss and outage of a probe stream: pure functions over send and reply times.

The outage is what traffic saw: the largest gap between consecutive replies (the stream's
start and end count as edges, so loss at either end and a stream that never recovers are
gaps too). With a window (the migration), only gaps that overlap it are considered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


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

    def as_dict(self) -> dict[str, Any]:
        """Plain data for results.json."""
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


def largest_gap(
    times: Sequence[float], start: float, end: float, window: tuple[float, float] | None = None
) -> tuple[float, float]:
    """(gap start, gap end) of the largest gap between `start`, sorted `times` and `end`.

    With `window`, only gaps overlapping it count (a gap wholly before or after is normal
    traffic, not the migration's outage).
    """
    edges = [start, *sorted(times), max(end, times[-1] if times else end)]
    best = (start, start)
    for a, b in zip(edges, edges[1:], strict=False):
        if window is not None and (b < window[0] or a > window[1]):
            continue
        if b - a > best[1] - best[0]:
            best = (a, b)
    return best


def analyse(
    send_ts: Sequence[float],
    replies: Sequence[tuple[int, float]],
    pps: float,
    windows: Sequence[tuple[float, float]] = (),
) -> StreamFigures:
    """Figures of a stream: probes sent at `send_ts`, replies as (seq, arrival) in order.

    With `windows` (one per migration), the outage is the largest gap overlapping any of
    them and `lost_outside_window` counts probes lost outside all of them.
    """
    resolution_ms = 1000.0 / pps if pps > 0 else 0.0
    sent = len(send_ts)
    valid = [(s, t) for s, t in replies if 0 <= s < sent]
    duplicates, reordered = count_duplicates_reordered([s for s, _ in valid])
    answered = {s for s, _ in valid}
    lost = sent - len(answered)
    if sent == 0:
        return StreamFigures(0, 0, 0, duplicates, reordered, 0.0, 0.0, 0.0, resolution_ms, 0)
    times = [t for _, t in valid]
    gaps = [largest_gap(times, send_ts[0], send_ts[-1], w) for w in windows] or [
        largest_gap(times, send_ts[0], send_ts[-1])
    ]
    gap = max(gaps, key=lambda g: g[1] - g[0])
    spans = [*windows, *gaps] if windows else []
    outside = sum(
        1
        for seq, ts in enumerate(send_ts)
        if seq not in answered and spans and not any(lo <= ts <= hi for lo, hi in spans)
    )
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
        lost_outside_window=outside,
    )
