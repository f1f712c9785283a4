"""How long the guest was cut off by a backend's restart: pure functions over reply times.

A reconnect case restarts a vhost-user backend on purpose (`plans.reconnect`); the flow
keeps the moments of the restart on the controller's clock (`RestartMarks`). The recovery
is measured like an outage, with the probes: the gap between the last reply before the old
backend was gone and the first reply after it (every reply after that moment went through
the new backend). Beside it, where the time went: stopping the old process, starting the
new one, until it said the guest's device was ready again, until the first reply.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vhostlm.measure.outage import MARGIN_INTERVALS, edge_figures


@dataclass
class RestartMarks:
    """One restart as the flow saw it: who, and when (epoch seconds, controller's clock).

    `restart`: the stop was asked; `down`: the old process had ended; `up`: the new one
    accepted commands; `ready`: its "virtio is now ready" line arrived; `reconnected`: the
    flow saw the guest answer again."""

    role: str
    program: str
    old_pid: int
    new_pid: int
    marks: dict[str, float] = field(default_factory=dict)
    ready_line: str = ""

    def span(self) -> tuple[float, float]:
        """From the restart to the new process's ready line (or to now, when none came):
        where what QEMU prints about its backend going away is expected."""
        start = self.marks.get("restart", 0.0)
        return start, self.marks.get("ready", max(time.time(), start))


def recovery_gap(times: Sequence[float], down: float) -> tuple[float, float] | None:
    """(last reply at or before `down`, first reply after it) in sorted `times`; None when
    either is missing (nothing answered before, or the guest never answered again)."""
    i = bisect.bisect_right(times, down)
    if i == 0 or i == len(times):
        return None
    return times[i - 1], times[i]


def _ms(a: float | None, b: float | None) -> float | None:
    return round((b - a) * 1000.0, 3) if a is not None and b is not None else None


SEGMENTS = {  # mark -> the segment it ends, in results.json
    "restart": "until_restart_ms",  # negative: the old backend answered while it stopped
    "down": "stopping_ms",  # the old process ended
    "up": "starting_ms",  # the new one accepts commands (testpmd's prompt, OVS's bridge)
    "ready": "until_ready_ms",  # its "virtio is now ready for processing"
}


def segments(marks: dict[str, float], last: float, first: float) -> dict[str, float]:
    """Where the recovery went, in ms: from the last reply, each moment in the order it
    came, each segment named by what ends it (`SEGMENTS`), up to the first reply
    (`to_first_reply_ms`); the segments add up to the recovery. The ready line may come
    before the new process is up (testpmd connects before its prompt)."""
    moments = sorted((t, SEGMENTS[k]) for k, t in marks.items() if k in SEGMENTS)
    out: dict[str, float] = {}
    prev = last
    for t, name in moments:
        out[name] = round((t - prev) * 1000.0, 3)
        prev = t
    out["to_first_reply_ms"] = round((first - prev) * 1000.0, 3)
    return out


def reconnect_figures(
    restart: RestartMarks,
    send_ts: Sequence[float],
    replies: Sequence[tuple[int, float]],
    pps: float,
    noise: dict[str, float],
    drops: Sequence[Sequence[float]] = (),
) -> dict[str, Any]:
    """The `measure.reconnect` object of one restart: its marks and, with probes, the
    recovery (`recovery_ms`, its uncertainty as an outage's, the probes lost in it, the
    segments). Without a reply after the restart `recovery_ms` is None."""
    marks = restart.marks
    t0 = marks.get("restart", 0.0)
    figures: dict[str, Any] = {
        "role": restart.role,
        "program": restart.program,
        "old_pid": restart.old_pid,
        "new_pid": restart.new_pid,
        "events": dict(marks),
        "ready_line": restart.ready_line,
        "ready_after_restart_ms": _ms(t0, marks.get("ready")),
        "recovery_ms": None,
    }
    sent = len(send_ts)
    valid = [(s, t) for s, t in replies if 0 <= s < sent]
    ordered = sorted((t, s) for s, t in valid)
    times = [t for t, _ in ordered]
    gap = recovery_gap(times, marks["down"]) if "down" in marks else None
    if gap is None:
        return figures
    interval = 1.0 / pps if pps > 0 else 0.0
    margin = MARGIN_INTERVALS * interval + noise.get("p99", 0.0) / 1000.0
    window = (min(gap[0], t0) - margin, gap[1])
    edge = edge_figures(send_ts, ordered, gap, window, None, noise, pps, drops)
    answered = {s for s, _ in valid}
    lead = max(interval, noise.get("p99", 0.0) / 1000.0)
    lost = [
        seq
        for seq, ts in enumerate(send_ts)
        if gap[0] - lead <= ts <= gap[1] and seq not in answered
    ]
    figures.update(
        recovery_ms=_ms(*gap),
        last_reply=gap[0],
        first_reply=gap[1],
        recovery_uncertainty_ms=edge.outage_uncertainty_ms,
        send_gap_edges_ms=edge.send_gap_edges_ms,
        tester_drops_in_window=edge.tester_drops_in_window,
        lost=len(lost),
        segments=segments(marks, *gap),
    )
    return figures


def quiet_spans(
    restarts: Sequence[RestartMarks], times: Sequence[float]
) -> list[tuple[float, float]]:
    """The reply gaps the restarts caused (sorted reply `times`): not the stream's noise,
    and no unexplained loss (`outage.analyse`'s `quiet`). A restart the guest never
    recovered from is quiet from the restart to the stream's end."""
    spans = []
    for restart in restarts:
        down = restart.marks.get("down")
        if down is None:
            continue
        gap = recovery_gap(times, down)
        end = gap[1] if gap is not None else max(times[-1] if times else down, down)
        spans.append((min(gap[0] if gap else down, restart.marks.get("restart", down)), end))
    return spans
