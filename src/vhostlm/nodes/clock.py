"""How far a node's clock is from the controller's, and event times put on one clock.

On a testbed the marks of a migration come from four clocks: the controller's (`migrate`,
backend log lines as they arrive), the two QEMUs' (STOP, RESUME) and the tester's (probes,
announcements). Before and after a run, each SSH node is asked for its time many times in
a row over its SSH connection, NTP-style: the controller notes when it asked (t0) and when
the answer came (t2), the node says what its clock read (t1). Every exchange bounds the
offset (node - controller) to [t1 - t2, t1 - t0] whatever the delays each way; the
intersection of all the bounds is the estimate, and its half-width the uncertainty.
A node on this machine (a lab namespace) reads the controller's own clock: no exchange.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vhostlm.nodes.base import Node

# round trips per reading: the tightest of them bound the offset; 64 take ~30 ms over SSH
EXCHANGES = 64
# what the node runs: one line with its clock (ns) for every line it reads
ECHO_SCRIPT = (
    "import sys, time\n"
    "print('ready', flush=True)\n"
    "for _ in sys.stdin:\n"
    "    sys.stdout.write(f'{time.time_ns()}\\n'); sys.stdout.flush()\n"
)

Sample = tuple[float, float, float]  # (t0 asked, t1 node's clock, t2 answered), epoch s


@dataclass(frozen=True)
class Reading:
    """One reading of a node's clock: offset (node - controller) and its bound, in s."""

    at: float  # controller time in the middle of the exchanges
    offset_s: float
    uncertainty_s: float
    rtt_s: float  # the lowest round trip seen
    samples: int


def estimate(samples: Sequence[Sample]) -> Reading:
    """The offset from exchanges: the middle of the intersection of their bounds, with half
    its width as the uncertainty. If the bounds do not intersect (the clock was stepped
    during the exchanges), the lowest-round-trip exchange alone, +- half its round trip."""
    if not samples:
        raise ValueError("no clock exchanges to estimate from")
    lo = max(t1 - t2 for _, t1, t2 in samples)
    hi = min(t1 - t0 for t0, t1, _ in samples)
    best = min(samples, key=lambda s: s[2] - s[0])
    rtt = best[2] - best[0]
    if lo > hi:
        lo = hi = best[1] - (best[0] + best[2]) / 2
        lo, hi = lo - rtt / 2, hi + rtt / 2
    at = (samples[0][0] + samples[-1][2]) / 2
    return Reading(at, (lo + hi) / 2, (hi - lo) / 2, rtt, len(samples))


@dataclass
class NodeClock:
    """A role's clock against the controller's: its readings (before the run, after each
    case, after the run) and the correction of the node's event times, with the offset
    interpolated between the readings around each time (extrapolated past the ends)."""

    role: str
    readings: list[Reading] = field(default_factory=list)  # none: the controller's clock

    @property
    def same_clock(self) -> bool:
        """True for a node that reads the controller's clock (nothing to correct)."""
        return not self.readings

    def offset_at(self, t: float) -> float:
        """The node's offset (s) at controller time ~t."""
        rs = self.readings
        if not rs:
            return 0.0
        if len(rs) == 1:
            return rs[0].offset_s
        i = 1
        while i < len(rs) - 1 and rs[i].at < t:
            i += 1
        a, b = rs[i - 1], rs[i]
        if b.at <= a.at:
            return b.offset_s
        return a.offset_s + (b.offset_s - a.offset_s) * (t - a.at) / (b.at - a.at)

    def to_controller(self, t: float) -> float:
        """A time the node's clock gave, on the controller's clock (the offset taken at the
        controller time it stands for, not at the node's reading of it)."""
        return t - self.offset_at(t - self.offset_at(t))

    @property
    def uncertainty_s(self) -> float:
        """The widest bound of the readings (0 for the controller's own clock)."""
        return max((r.uncertainty_s for r in self.readings), default=0.0)

    @property
    def drift_ppm(self) -> float | None:
        """How fast the offset moved from the first reading to the last, in ppm."""
        if len(self.readings) < 2 or self.readings[-1].at <= self.readings[0].at:
            return None
        first, last = self.readings[0], self.readings[-1]
        return (last.offset_s - first.offset_s) / (last.at - first.at) * 1e6

    def figures(self) -> dict[str, Any]:
        """What results.json records of this clock (ms; drift in ppm)."""
        if not self.readings:
            return {"same_clock": True, "offset_ms": 0.0, "uncertainty_ms": 0.0}
        first, last = self.readings[0], self.readings[-1]
        drift = self.drift_ppm
        return {
            "same_clock": False,
            "offset_ms": round(first.offset_s * 1000, 3),
            "uncertainty_ms": round(self.uncertainty_s * 1000, 3),
            "offset_after_ms": round(last.offset_s * 1000, 3),
            "drift_ppm": round(drift, 3) if drift is not None else None,
            "rtt_ms": round(min(r.rtt_s for r in self.readings) * 1000, 3),
            "readings": len(self.readings),
            "samples": sum(r.samples for r in self.readings),
        }


class Clocks:
    """Every role's clock for one run: read over each node's connection when asked."""

    def __init__(self, nodes: dict[str, tuple[Node, str]]) -> None:
        """`nodes`: role -> (its node, the Python that runs the echo script there)."""
        self.nodes = nodes
        self.of = {role: NodeClock(role) for role in nodes}

    def read(self) -> None:
        """One reading of every node that has a clock of its own."""
        for role, (node, python) in self.nodes.items():
            samples = node.clock_samples(python, EXCHANGES)
            if samples:
                self.of[role].readings.append(estimate(samples))

    def clock(self, role: str) -> NodeClock:
        """The role's clock (the controller's own for a role not measured)."""
        return self.of.get(role) or NodeClock(role)

    def for_node(self, node: Node) -> NodeClock:
        """The clock of whichever role `node` plays (the controller's if none)."""
        for role, (n, _) in self.nodes.items():
            if n is node or n.label == node.label:
                return self.of[role]
        return NodeClock(node.name)

    def figures(self) -> dict[str, dict[str, Any]]:
        """role -> its clock's figures, for results.json."""
        return {role: clock.figures() for role, clock in self.of.items()}


def shift_probe_data(data: dict[str, Any], clock: NodeClock) -> dict[str, Any]:
    """The tester's probe data with every time on the controller's clock (in place)."""
    if clock.same_clock or not data:
        return data
    fix = clock.to_controller
    data["send_ts"] = [fix(t) for t in data.get("send_ts", [])]
    data["replies"] = [[s, fix(t)] for s, t in data.get("replies", [])]
    if "t0" in data:
        data["t0"] = fix(float(data["t0"]))
    rx = data.get("rx")
    if isinstance(rx, dict) and rx.get("drop_log"):
        rx["drop_log"] = [[fix(a), fix(b), n] for a, b, n in rx["drop_log"]]
    data["clock_offset_ms"] = round(clock.offset_at(float(data.get("t0", 0.0))) * 1000, 3)
    return data
