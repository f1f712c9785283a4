"""A case's traffic and what it measured: tester stream, announce sniffer, QMP marks.

Owns the tester process and the tcpdump on the backup's switch port for one case, keeps
the wall-clock marks of the migration (QMP event timestamps), and turns it all into the
`measure` figures of results.json.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from vhostlm.addresses import GUEST_IP, GUEST_MAC, TESTER_IP
from vhostlm.errors import StepFailed
from vhostlm.measure.announce import first_announcement, parse_announcements, tcpdump_argv
from vhostlm.measure.outage import analyse, largest_gap
from vhostlm.measure.payload import payload_figures
from vhostlm.measure.tester import PROGRESS_RE, Tester
from vhostlm.nodes.base import NodeProcess
from vhostlm.plans.env import LabEnv
from vhostlm.report.results import MigrationFigures

# After RESUME the path settles (vhost queues restart, the switch relearns): losses then
# still belong to the switch-over, not to the tester or the steady state.
SETTLE_S = 1.0


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
        for role, (node, where) in bed.sniff_points().items():
            key = (node.label, where)
            if key not in by_place:
                by_place[key] = node.process(
                    f"{case}-announce-{role}", tcpdump_argv(where, guest_mac), env.rundir
                )
            self.sniffers[role] = by_place[key]
        self._sniffer_list = list(by_place.values())
        self.leg_dest: list[str] = []
        self.legs: list[dict[str, float]] = []
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
    def qmp_marks(marks: dict[str, float], src_events: list[dict[str, Any]]) -> None:
        """Record the source's MIGRATION states and STOP of one migration."""
        for event in src_events:
            if event.get("event") == "MIGRATION":
                marks.setdefault(str(event["data"]["status"]), event_time(event))
            elif event.get("event") == "STOP":
                marks.setdefault("stop", event_time(event))

    def stop(self) -> None:
        """Stop the tester and the sniffer (once)."""
        if self._data is None:
            self._data = self.tester.stop()
            for sniffer in self._sniffer_list:
                sniffer.stop()

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
        announced = first_announcement(
            parse_announcements(self.sniffers[dest].output.text()),
            marks.get("stop", marks.get("migrate", 0.0)),
        )
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
            measure["legs"] = legs
            return measure
        send_ts = data["send_ts"]
        replies = [(int(s), float(t)) for s, t in data["replies"]]
        times = [t for _, t in replies]
        windows = []
        for marks, leg in zip(self.legs, legs, strict=False):
            end = marks.get("resume", marks.get("cancelled", marks.get("completed", send_ts[-1])))
            window = (marks.get("migrate", send_ts[0]), end + SETTLE_S)
            windows.append(window)
            gap = largest_gap(times, send_ts[0], send_ts[-1], window)
            leg.update(window=list(window), outage_ms=round((gap[1] - gap[0]) * 1000, 3),
                       outage_start=gap[0], outage_end=gap[1])  # fmt: skip
        measure.update(analyse(send_ts, replies, self.pps, windows).as_dict())
        measure["window"] = list(windows[0]) if windows else None
        measure["legs"] = legs
        t0 = float(data["t0"])
        first = self.legs[0] if self.legs else {}
        measure["timeline"] = {
            "t0": t0,
            "reply_ms": [round((t - t0) * 1000, 3) for t in sorted(times)],
            "marks_ms": {k: round((v - t0) * 1000, 3) for k, v in first.items()},
            "legs_marks_ms": [
                {k: round((v - t0) * 1000, 3) for k, v in marks.items()} for marks in self.legs
            ],
        }
        return measure


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
