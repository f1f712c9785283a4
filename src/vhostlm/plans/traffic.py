"""A case's traffic and what it measured: tester stream, announce sniffer, QMP marks.

Owns the tester process and the tcpdump on the backup's switch port for one case, keeps
the wall-clock marks of the migration (QMP event timestamps), and turns it all into the
`measure` figures of results.json.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from vhostlm.apps.guest import GUEST_IP
from vhostlm.apps.process import Process
from vhostlm.apps.qemu import GUEST_MAC
from vhostlm.errors import StepFailed
from vhostlm.measure.announce import first_announcement, parse_announcements, tcpdump_argv
from vhostlm.measure.outage import analyse
from vhostlm.measure.tester import PROGRESS_RE, Tester
from vhostlm.plans.env import LabEnv
from vhostlm.report.results import MigrationFigures
from vhostlm.testbed.lab import TESTER_NET

# After RESUME the path settles (vhost queues restart, the switch relearns): losses then
# still belong to the switch-over, not to the tester or the steady state.
SETTLE_S = 1.0


def event_time(event: dict[str, Any]) -> float:
    """A QMP event's timestamp as epoch seconds."""
    ts = event.get("timestamp", {})
    return float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6


class Traffic:
    """The tester stream and the announce sniffer of one case; stopped by the case's stack."""

    def __init__(self, case: str, env: LabEnv, stack: ExitStack) -> None:
        lab, opts = env.lab, env.options
        self.pps = opts.rate
        probe_ips = (f"{TESTER_NET}.3", GUEST_IP) if opts.probes else None
        self.tester = Tester(
            f"{case}-tester", env.rundir, lab.ns("tester"), lab.port("tester"),
            opts.dst_mac, self.pps, probe_ips,
        )  # fmt: skip
        self.sniffer = Process(
            f"{case}-announce-sniffer",
            tcpdump_argv("p-backup", GUEST_MAC),
            env.rundir,
            netns=lab.ns("switch"),
        )
        self.marks: dict[str, float] = {}
        self._data: dict[str, Any] | None = None
        stack.callback(self.stop)

    def start(self) -> None:
        """Start the sniffer (ready once tcpdump listens), then the tester."""
        self.sniffer.start()
        self.sniffer.expect(r"listening on", 15)
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

    def qmp_marks(self, src_events: list[dict[str, Any]], resume: dict[str, Any]) -> None:
        """Record the source's MIGRATION states and STOP, and the destination's RESUME."""
        for event in src_events:
            if event.get("event") == "MIGRATION":
                self.marks.setdefault(str(event["data"]["status"]), event_time(event))
            elif event.get("event") == "STOP":
                self.marks.setdefault("stop", event_time(event))
        self.marks["resume"] = event_time(resume)

    def stop(self) -> None:
        """Stop the tester and the sniffer (once)."""
        if self._data is None:
            self._data = self.tester.stop()
            self.sniffer.stop()

    def finish(self, migration: MigrationFigures) -> dict[str, Any]:
        """Stop the traffic and compute the case's `measure` figures."""
        self.stop()
        data = self._data or {}
        qemu = {k: v for k, v in asdict(migration).items() if k != "status"}
        measure: dict[str, Any] = {"pps": self.pps, "resolution_ms": round(1000 / self.pps, 3),
                                   "qemu": qemu, "events": dict(self.marks)}  # fmt: skip
        if "stop" in self.marks and "resume" in self.marks:
            measure["stop_to_resume_ms"] = round(
                (self.marks["resume"] - self.marks["stop"]) * 1000, 3
            )
        announced = first_announcement(
            parse_announcements(self.sniffer.output.text()),
            self.marks.get("stop", self.marks.get("migrate", 0.0)),
        )
        measure["announce"] = {"seen": announced is not None}
        if announced is not None:
            self.marks["announce"] = announced.at
            measure["announce"].update(kind=announced.kind, at=announced.at)
            if "resume" in self.marks:
                after = round((announced.at - self.marks["resume"]) * 1000, 3)
                measure["announce"]["after_resume_ms"] = after
        if data.get("sent"):
            send_ts = data["send_ts"]
            replies = [(int(s), float(t)) for s, t in data["replies"]]
            end = self.marks.get("resume", self.marks.get("completed", send_ts[-1]))
            window = (self.marks.get("migrate", send_ts[0]), end + SETTLE_S)
            measure["window"] = list(window)
            measure.update(analyse(send_ts, replies, self.pps, window).as_dict())
            t0 = float(data["t0"])
            measure["timeline"] = {
                "t0": t0,
                "reply_ms": [round((t - t0) * 1000, 3) for t in sorted(t for _, t in replies)],
                "marks_ms": {k: round((v - t0) * 1000, 3) for k, v in self.marks.items()},
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
