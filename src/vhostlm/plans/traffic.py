"""A case's traffic and what it measured: tester stream, announce sniffer, QMP marks.

Owns the tester process and the tcpdump on the backup's switch port for one case, keeps
the wall-clock marks of the migration (QMP event timestamps), and turns it all into the
`measure` figures of results.json.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack, suppress
from dataclasses import asdict
from typing import Any

from vhostlm.addresses import GUEST_IP, GUEST_MAC, TESTER_IP
from vhostlm.errors import SetupError, StepFailed
from vhostlm.measure.announce import first_announcement, parse_announcements, tcpdump_argv
from vhostlm.measure.breakdown import breakdown
from vhostlm.measure.outage import (
    RATE_BEHIND,
    STALL_INTERVALS,
    analyse,
    noise_floor,
    percentile,
    switch_window,
)
from vhostlm.measure.payload import payload_figures
from vhostlm.measure.reconnect import RestartMarks, quiet_spans, reconnect_figures
from vhostlm.measure.tester import PROGRESS_RE, Tester
from vhostlm.nodes.base import NodeProcess
from vhostlm.nodes.clock import NodeClock, shift_probe_data
from vhostlm.plans.env import LabEnv
from vhostlm.report.results import MigrationFigures

# After RESUME the path settles (vhost queues restart, the switch relearns): losses then
# still belong to the switch-over, not to the tester or the steady state.
SETTLE_S = 1.0
# what each leg of `measure.legs` carries of its own outage (the top level: the worst leg's)
LEG_KEYS = (
    "outage_ms", "outage_start", "outage_end", "send_gap_ms", "send_gap_edges_ms",
    "outage_uncertainty_ms", "below_noise", "precopy_max_gap_ms", "tester_drops_in_window",
    "window_pps",
)  # fmt: skip


def event_time(event: dict[str, Any]) -> float:
    """A QMP event's timestamp as epoch seconds."""
    ts = event.get("timestamp", {})
    return float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6


class Traffic:
    """The tester stream and the announce sniffer of one case; stopped by the case's stack.

    The tester sends to --dst-mac (the guest's MAC unless told otherwise); the sniffer
    watches for announcements of `guest_mac`, the MAC QEMU gave the guest's NIC."""

    def __init__(
        self, case: str, env: LabEnv, stack: ExitStack, guest_mac: str = GUEST_MAC
    ) -> None:
        bed, opts = env.bed, env.options
        self.guest_mac = guest_mac
        self.pps = opts.rate
        probe_ips = (TESTER_IP, GUEST_IP) if opts.probes else None
        iface = bed.nic("tester").interface or "eth0"
        self.tester = Tester(
            f"{case}-tester", env.rundir, bed.node("tester"), iface, opts.dst_mac, self.pps,
            probe_ips, bed.tools("tester").python, bed.workdir("tester"),
            probe_size=opts.probe_size,
        )  # fmt: skip
        # one tcpdump per place to watch; roles watched at the same place share it
        by_place: dict[tuple[str, str], NodeProcess] = {}
        self.sniffers: dict[str, NodeProcess] = {}
        self.clocks = bed.clocks
        self._sniff_clock: dict[str, NodeClock] = {}
        for role, (node, where) in bed.sniff_points().items():
            key = (node.label, where)
            if key not in by_place:
                by_place[key] = node.process(
                    f"{case}-announce-{role}", tcpdump_argv(where, guest_mac), env.rundir
                )
            self.sniffers[role] = by_place[key]
            self._sniff_clock[role] = self.clocks.for_node(node)
        self._sniffer_list = list(by_place.values())
        self.leg_dest: list[str] = []
        self.legs: list[dict[str, float]] = []
        self.ready_lines: dict[int, str] = {}  # leg -> the destination backend's ready line
        self.restarts: list[RestartMarks] = []  # backends restarted on purpose (reconnect)
        self._data: dict[str, Any] | None = None
        self.payload: dict[str, Any] = {}  # the tester's payload checks, once finished
        stack.callback(self.stop)

    def start(self) -> None:
        """Start the sniffer (ready once tcpdump listens), then the tester."""
        for sniffer in self._sniffer_list:
            sniffer.start()
            sniffer.expect(r"listening on", 15)
        self.tester.start()

    def sent(self) -> int:
        """Probes or frames sent so far (all of them once stopped)."""
        if self._data:
            return int(self._data.get("sent", 0))
        return self.tester.progress()[0]

    def wait_replies(self, count: int, timeout: float) -> bool:
        """Wait until the tester has seen `count` probe replies."""

        def enough(text: str) -> bool:
            found = PROGRESS_RE.findall(text)
            return bool(found) and int(found[-1][1] or 0) >= count

        return self.tester.process.output.wait_for(enough, timeout)

    def new_leg(self, dest: str) -> dict[str, float]:
        """Marks (epoch seconds) of the next migration, to `dest` (host or backup)."""
        self.legs.append({})
        self.leg_dest.append(dest)
        return self.legs[-1]

    @staticmethod
    def qmp_marks(
        marks: dict[str, float], src_events: list[dict[str, Any]], clock: NodeClock | None = None
    ) -> None:
        """Record the source's MIGRATION states and STOP of one migration, on the
        controller's clock (`clock`: the source node's; None for the controller's own)."""
        fix = clock.to_controller if clock is not None else float
        for event in src_events:
            if event.get("event") == "MIGRATION":
                marks.setdefault(str(event["data"]["status"]), fix(event_time(event)))
            elif event.get("event") == "STOP":
                marks.setdefault("stop", fix(event_time(event)))

    def stop(self) -> None:
        """Stop the tester and the sniffer (once); the clocks are read again, and the
        tester's times put on the controller's clock."""
        if self._data is None:
            data = self.tester.stop()
            for sniffer in self._sniffer_list:
                sniffer.stop()
            with suppress(SetupError):  # a node gone now: the earlier readings serve
                self.clocks.read()
            self._data = shift_probe_data(data, self.clocks.clock("tester"))

    def _leg_figures(
        self, marks: dict[str, float], dest: str, migration: MigrationFigures
    ) -> dict[str, Any]:
        leg: dict[str, Any] = {
            "qemu": {k: v for k, v in asdict(migration).items() if k != "status"},
            "status": migration.status,
            "to": dest,
            "events": dict(marks),
        }
        if "stop" in marks and "resume" in marks:
            leg["stop_to_resume_ms"] = round((marks["resume"] - marks["stop"]) * 1000, 3)
        clock = self._sniff_clock[dest]  # tcpdump's times are the sniffing node's
        seen = [
            dataclasses.replace(a, at=clock.to_controller(a.at))
            for a in parse_announcements(self.sniffers[dest].output.text())
        ]
        announced = first_announcement(seen, marks.get("stop", marks.get("migrate", 0.0)))
        leg["announce"] = {"seen": announced is not None}
        if announced is not None and "resume" in marks:
            marks["announce"] = announced.at
            after = round((announced.at - marks["resume"]) * 1000, 3)
            leg["announce"].update(kind=announced.kind, at=announced.at, after_resume_ms=after)
        return leg

    def finish(self, migrations: list[MigrationFigures]) -> dict[str, Any]:
        """Stop the traffic and compute the `measure` figures (the first migration on top,
        every migration of the case under "legs")."""
        self.stop()
        data = self._data or {}
        self.payload = payload_figures(data)
        legs = [
            self._leg_figures(m, d, f)
            for m, d, f in zip(self.legs, self.leg_dest, migrations, strict=False)
        ]
        measure: dict[str, Any] = {"pps": self.pps, "resolution_ms": round(1000 / self.pps, 3)}
        if legs:
            measure.update({k: v for k, v in legs[0].items() if k not in ("status", "to")})
        if not data.get("sent"):
            self._breakdowns(legs, measure)
            measure["legs"] = legs
            marks_only = [reconnect_figures(r, [], [], self.pps, {}) for r in self.restarts]
            add_reconnects(measure, marks_only)
            return measure
        part, per_leg = probe_figures(data, self.legs, self.pps, self.restarts)
        for leg, extra in zip(legs, per_leg, strict=False):
            leg.update(extra)
        measure.update(part)
        self._breakdowns(legs, measure)
        measure["legs"] = legs
        return measure

    def _breakdowns(self, legs: list[dict[str, Any]], measure: dict[str, Any]) -> None:
        """Each leg's `breakdown`; the top level has the first leg's."""
        add_breakdowns(legs, self.legs, self.ready_lines)
        if legs:
            measure["breakdown"] = legs[0]["breakdown"]


def add_breakdowns(
    legs: list[dict[str, Any]], legs_marks: list[dict[str, float]], ready_lines: dict[int, str]
) -> None:
    """Give each leg's figures its `breakdown`: from its marks (with "ready" and
    "announce"), its outage edges and uncertainty, and the ready line of leg n."""
    for n, (leg, marks) in enumerate(zip(legs, legs_marks, strict=False)):
        start, end = leg.get("outage_start"), leg.get("outage_end")
        edges = (float(start), float(end)) if start is not None and end is not None else None
        leg["breakdown"] = breakdown(
            marks, edges, uncertainty_ms=leg.get("outage_uncertainty_ms"),
            dest=str(leg.get("to", "backup")), ready_line=ready_lines.get(n, ""),
        ).as_dict()  # fmt: skip


def add_reconnects(measure: dict[str, Any], reconnects: list[dict[str, Any]]) -> None:
    """`reconnect`: the case's (first) backend restart; `reconnects`: all, when several."""
    if reconnects:
        measure["reconnect"] = reconnects[0]
    if len(reconnects) > 1:
        measure["reconnects"] = reconnects


def probe_figures(
    data: dict[str, Any],
    legs_marks: list[dict[str, float]],
    pps: float,
    restarts: list[RestartMarks] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the `measure` figures, each leg's own) of a probe dump and the legs' marks.

    Each leg's window is [STOP - margin, RESUME + SETTLE_S] (`switch_window`, the margin
    from the noise of the replies before the first migrate); the top level has the worst
    leg's outage, the noise floor, the tester's drops and receive lag, the timeline.
    `restarts`: backends restarted on purpose; their reply gaps are measured apart
    (`reconnect`) and are neither noise nor unexplained loss."""
    send_ts = data["send_ts"]
    replies = [(int(s), float(t)) for s, t in data["replies"]]
    times = sorted(t for _, t in replies)
    rx = data.get("rx") or {}
    drops = [tuple(d) for d in rx.get("drop_log", [])]
    total_drops = int(rx.get("drops", 0))
    baseline_end = legs_marks[0].get("migrate") if legs_marks else None
    quiet = quiet_spans(restarts or [], times)
    noise = noise_floor(times, baseline_end, quiet)
    windows, precopies, per_leg = [], [], []
    for marks in legs_marks:
        window, precopy = switch_window(marks, send_ts[0], send_ts[-1], pps, noise["p99"], SETTLE_S)
        windows.append(window)
        precopies.append(precopy)
        one = analyse(send_ts, replies, pps, [window], baseline_end=baseline_end,
                      precopy=[precopy], drops=drops, tester_drops=total_drops,
                      quiet=quiet)  # fmt: skip
        figures = {k: v for k, v in one.as_dict().items() if k in LEG_KEYS}
        per_leg.append({"window": list(window), **figures})
    whole = analyse(send_ts, replies, pps, windows, baseline_end=baseline_end,
                    precopy=precopies, drops=drops, tester_drops=total_drops,
                    quiet=quiet)  # fmt: skip
    measure = whole.as_dict()
    add_reconnects(measure, [
        reconnect_figures(r, send_ts, replies, pps, noise, drops) for r in restarts or []
    ])  # fmt: skip
    measure["timestamps"] = rx.get("clock", "user")
    lags = rx.get("read_lag_ms") or []
    measure["receive_lag_ms"] = {
        "p99": round(percentile(lags, 99), 3), "max": round(max(lags, default=0.0), 3)
    }  # fmt: skip
    measure["window"] = list(windows[0]) if windows else None
    t0 = float(data["t0"])
    first = legs_marks[0] if legs_marks else {}
    measure["timeline"] = {
        "t0": t0,
        "reply_ms": [round((t - t0) * 1000, 3) for t in times],
        "marks_ms": {k: round((v - t0) * 1000, 3) for k, v in first.items()},
        "legs_marks_ms": [
            {k: round((v - t0) * 1000, 3) for k, v in marks.items()} for marks in legs_marks
        ],
    }
    return measure, per_leg


def check_limits(measure: dict[str, Any], max_outage_ms: float | None, max_loss: int | None) -> str:
    """The pass criteria: StepFailed naming the measured figure when one is exceeded."""
    if "outage_ms" not in measure:
        raise StepFailed("no probe figures to check the limits against (run with probes)")
    outage, lost = float(measure["outage_ms"]), int(measure["lost"])
    if max_outage_ms is not None and outage > max_outage_ms:
        raise StepFailed(f"outage {outage:.3f} ms exceeds --max-outage-ms {max_outage_ms:g}")
    if max_loss is not None and lost > max_loss:
        raise StepFailed(f"{lost} probes lost exceeds --max-loss {max_loss}")
    return f"outage {outage:.3f} ms, {lost} probes lost: within limits"


def _stalls(figures: dict[str, Any], interval_ms: float, noise_p99: float) -> list[str]:
    """The edges of one outage at which the tester stopped sending for longer than
    STALL_INTERVALS probe intervals and the steady stream's noise p99 (which the
    uncertainty already allows for), in words."""
    limit = max(STALL_INTERVALS * interval_ms, noise_p99)
    edges = figures.get("send_gap_edges_ms") or []
    return [
        f"the tester stopped sending for {gap:.0f} ms at the {where} of the outage"
        for where, gap in zip(("start", "end"), edges, strict=False)
        if gap > limit
    ]


def rate_words(measure: dict[str, Any]) -> str:
    """The rate the tester achieved against the rate asked, in words ('' without figures).

    Falling behind (below RATE_BEHIND of the rate, over the stream or in the outage's
    window) is said so, and is no error by itself: the outage is the gap between two
    replies, and what a sender running late can do to it is move its edges. The edges'
    own send gaps are measured (`send_gap_edges_ms`): they widen the uncertainty by what
    they are, and one longer than a stall (STALL_INTERVALS intervals and the noise p99) is
    the stall error. A sender merely slower than asked everywhere else makes fewer probes,
    not a wrong figure: loss is counted of the probes sent, the noise floor of the replies
    seen."""
    asked = float(measure.get("pps") or 0.0)
    achieved = float(measure.get("achieved_pps") or 0.0)
    window = float(measure.get("window_pps") or 0.0)
    if asked <= 0 or achieved <= 0:
        return ""
    if min(achieved, window or achieved) < RATE_BEHIND * asked:
        return (
            f"the tester fell behind its rate: {achieved:.0f} of the {asked:g} probes/s asked"
            f" ({window:.0f} in the outage's window)"
        )
    return f"sent {achieved:.0f} of the {asked:g} probes/s asked"


def check_measurement(measure: dict[str, Any]) -> str:
    """Is the outage figure the guest's? The step after the last migration of a probe case.

    SetupError (verdict error: the figure says nothing about the guest) when the tester
    stalled at an edge of an outage (moving that edge by as much) or its receive socket
    dropped frames in an outage window; StepFailed when probes were lost outside every
    window (loss the migration does not explain). Else the outage in words: its
    uncertainty, the noise floor, whether it is below it, the rate the tester achieved
    (`rate_words`: falling behind is said, not an error by itself)."""
    if "outage_ms" not in measure:
        raise StepFailed("no probe figures to check (the tester sent nothing)")
    interval = float(measure.get("resolution_ms") or 0.0)
    noise = measure.get("noise_ms") or {}
    p99, top = float(noise.get("p99", 0.0)), float(noise.get("max", 0.0))
    legs = [leg for leg in measure.get("legs") or [] if "outage_ms" in leg] or [measure]
    faults: list[str] = []
    for n, leg in enumerate(legs):
        where = f" (migration {n + 1})" if len(legs) > 1 else ""
        faults += [f"{why}{where}" for why in _stalls(leg, interval, p99)]
        drops = int(leg.get("tester_drops_in_window") or 0)
        if drops:
            faults.append(
                f"the tester's receive socket dropped {drops} frames in the outage window{where}"
            )
    outage = float(measure["outage_ms"])
    rate = rate_words(measure)
    if faults:
        raise SetupError(
            f"{'; '.join(faults)}: the {outage:.0f} ms outage is the tester's, not only the "
            f"guest's{f' ({rate})' if rate else ''}"
        )
    outside = int(measure.get("lost_outside_window") or 0)
    if outside:
        t0 = float((measure.get("timeline") or {}).get("t0") or 0.0)
        at = measure.get("lost_outside_at") or []
        when = ", ".join(f"{t - t0:.3f}" for t in at[:5]) + (", ..." if outside > 5 else "")
        window = measure.get("window") or [t0, t0]
        raise StepFailed(
            f"{outside} probes lost outside the switch-over window "
            f"({window[0] - t0:.3f}-{window[1] - t0:.3f} s): sent at {when} s after the "
            "first probe"
        )
    detail = (
        f"outage {outage:.1f} ms ± {float(measure.get('outage_uncertainty_ms') or 0):.1f} ms"
        f" (noise p99 {p99:.1f} ms, max {top:.1f} ms; timestamps "
        f"{measure.get('timestamps', 'user')}; {int(measure.get('tester_drops') or 0)} "
        "tester drops)"
    )
    if rate:
        detail += f"; {rate}"
    precopy_lost = int(measure.get("lost_during_precopy") or 0)
    if precopy_lost:
        detail += f"; {precopy_lost} probes lost during the precopy"
    if measure.get("below_noise"):
        detail += ": below the noise floor, no larger than a gap of the steady stream"
    paused = float(measure.get("send_gap_ms") or 0.0)
    if paused > max(STALL_INTERVALS * interval, p99):  # more than its usual hiccups
        detail += f"; the tester paused {paused:.0f} ms inside it, not at its edges"
    pre = measure.get("precopy_max_gap_ms")
    if pre is not None:
        detail += f"; largest gap during the precopy {float(pre):.1f} ms"
    return detail
