"""Restarting a case's vhost-user backend on purpose, and waiting until it has reconnected.

The reconnect cases (`plans.reconnect`) restart the host's backend before the migration
starts, or the destination's right after the switch-over. In client mode QEMU is the
vhost-user server and keeps listening; the new backend process connects to its socket, QEMU
starts the device again, and the guest must answer again. In server mode the backend
listens and QEMU is the client: the new process makes its socket anew, and QEMU, whose
vhost-user chardev has `reconnect-ms=QEMU_RECONNECT_MS` in these cases (`apps.qemu`),
connects to it by itself. A restart step records the restart's moments for the measurement
(`Traffic.restarts` -> `measure.reconnect`), waits for the new process's "virtio is now
ready for processing" (printed in both modes once QEMU has set the device up again), then
for the guest's replies; a reconnect that never happens fails the step with the backend's
last lines.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from vhostlm.apps.console import GuestShell
from vhostlm.apps.guest import Receiver
from vhostlm.backends.base import VhostBackend
from vhostlm.errors import SetupError, StepFailed
from vhostlm.measure.outage import resumed_at
from vhostlm.measure.reconnect import RestartMarks
from vhostlm.options import RunOptions
from vhostlm.plans.faults import Vitals
from vhostlm.plans.traffic import SETTLE_S, Traffic
from vhostlm.report.results import StepResult

RECONNECT_TIMEOUT_S = 30.0  # from the restart to the ready line, and to the first replies
# the restart comes this long after the switch-over's outage window (RESUME + SETTLE_S) has
# closed, so the restart's reply gap never reaches into it (replies come in bursts up to
# 26 ms apart under TCG here)
PAST_WINDOW_S = 0.25
TAIL_LINES = 4
# QEMU's reconnect delay when it is the vhost-user client of a restarted server-mode
# backend. QEMU tries again this long after the old socket closed and then as often, each
# try a connect() in a worker thread; the new backend binds its socket 0.4 to 0.9 s after
# the restart (its start), so the try that succeeds comes 0 to this long (on average half)
# after the socket exists: at most 100 ms, for about ten cheap tries a second while the
# backend starts. (QEMU before 9.2 takes whole seconds only: 1 s, its `reconnect=1`.) Most
# of what server mode adds over client mode is DPDK's, not this: a new listening socket
# joins the vhost event thread's poll set without waking it (`vhost_user_start_server`,
# lib/vhost/socket.c), so QEMU's connect waits in the backlog until that poll's 1 s
# timeout (lib/vhost/fd_man.c): ~0.9 s here.
QEMU_RECONNECT_MS = 100
SEGMENT_WORDS = {  # measure.reconnect's segments, in the order they came, in words
    "until_restart_ms": "until the restart",
    "stopping_ms": "stopping",
    "starting_ms": "starting",
    "until_ready_ms": "until its ready line",
    "to_first_reply_ms": "to the first reply",
}


def after_window(marks: dict[str, float]) -> float:
    """When a destination's restart may come, from the leg's marks (epoch s): once the
    outage window has closed (a settle after RESUME, or after the destination backend's
    ring if that came later: `switch_window`), so the two gaps are measured apart."""
    return (resumed_at(marks) or 0.0) + SETTLE_S + PAST_WINDOW_S


def last_lines(backend: VhostBackend, count: int = TAIL_LINES) -> str:
    """The last `count` non-empty lines of the backend's current process (of its earlier
    ones when that printed nothing), ' | '-joined."""
    text = backend.process.output.text().strip() or backend.log()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-count:]) if lines else "nothing"


@dataclass
class BackendRestart:
    """What a restart step needs of its case: its backends by role, the watch on its
    processes, its traffic and the guest's receiver, the run's options."""

    backends: dict[str, VhostBackend]
    vitals: Vitals
    traffic: Traffic
    receiver: Receiver
    options: RunOptions

    def past_switch_over(self, not_before: float) -> None:
        """Wait, on the guest's replies, until `not_before` (epoch s) has passed: the guest
        answers on the destination all the while (each wait is for the replies that time
        brings at the probe rate). Without probes there is no window to keep apart."""
        opts, tester = self.options, self.traffic.tester
        while opts.probes and (left := not_before - time.time()) > 0:
            want = tester.progress()[1] + max(1, math.ceil(opts.rate * left))
            if not self.traffic.wait_replies(want, RECONNECT_TIMEOUT_S):
                raise StepFailed(
                    f"before the restart the guest stopped answering probes "
                    f"({tester.progress()[1]} answered, {want} awaited)"
                )

    def run(self, role: str, shell: GuestShell, step: StepResult) -> RestartMarks:
        """Restart `role`'s backend; StepFailed, with its last lines, unless it reports the
        guest's device ready again and the guest answers (receives) again in time."""
        backend = self.backends[role]
        label = f"the {role} {backend.program}"
        old_pid = backend.process.pid
        self.vitals.retire(backend.process)  # its end is the restart's, no fault
        try:
            done = backend.restart()
        except SetupError as exc:
            raise StepFailed(
                f"{label} (pid {old_pid}) did not start again after its restart: {exc}; "
                f"its last lines: {last_lines(backend)}"
            ) from exc
        self.vitals.watch(label, backend.process, role)
        marks = {"restart": done.stopping, "down": done.down, "up": done.up}
        record = RestartMarks(role, backend.program, old_pid, backend.process.pid, marks)
        self.traffic.restarts.append(record)  # measured even when it never reconnects
        found = backend.ready_at(0, timeout=RECONNECT_TIMEOUT_S)
        if found is None:
            # client mode: the backend connects; server mode: QEMU must connect to it
            what = (
                f"{label} did not reconnect"
                if backend.config.client
                else f"QEMU did not reconnect to {label}"
            )
            raise StepFailed(
                f"{what} after its restart (pid {old_pid} -> "
                f'{backend.process.pid}): no "virtio is now ready for processing" within '
                f"{RECONNECT_TIMEOUT_S:g} s; its last lines: {last_lines(backend)}"
            )
        record.marks["ready"], record.ready_line = found[0], found[1].strip()
        ready_ms = (found[0] - done.stopping) * 1000.0
        done_words = f"{label} reconnected ({ready_ms:.0f} ms after its restart)"
        self._answers_again(shell, done_words, backend)
        record.marks["reconnected"] = time.time()
        step.figures.update(
            stop_ms=round((done.down - done.stopping) * 1000.0, 1),
            start_ms=round((done.up - done.down) * 1000.0, 1),
            ready_after_restart_ms=round(ready_ms, 1),
        )
        step.detail = (
            f"{label} restarted (pid {old_pid} -> {backend.process.pid}): stopped in "
            f"{step.figures['stop_ms']} ms, up in {step.figures['start_ms']} ms, reconnected "
            f'("{record.ready_line[-60:]}") {ready_ms:.0f} ms after the restart; the guest '
            "answers again"
        )
        return record

    def _answers_again(self, shell: GuestShell, done: str, backend: VhostBackend) -> None:
        """The guest answers a steady second of probes again (without probes: receives
        --after-packets more frames); StepFailed naming what came and the backend's lines."""
        opts, rx = self.options, self.receiver
        if opts.probes:
            tester = self.traffic.tester
            since = tester.progress()[1]
            want = since + max(1, int(opts.rate * opts.warmup_s))
            if self.traffic.wait_replies(want, RECONNECT_TIMEOUT_S):
                return
            got = tester.progress()[1] - since
            what = (
                f"the guest answered {got} probes in {RECONNECT_TIMEOUT_S:g} s "
                f"(wanted {want - since})"
            )
        else:
            now = rx.count(shell)
            if rx.wait_count(shell, now + opts.after_packets, opts.after_timeout_s) is not None:
                return
            what = (
                f"the guest received {rx.count(shell) - now} frames in {opts.after_timeout_s:g} s"
            )
        raise StepFailed(f"{done}, but then {what}; its last lines: {last_lines(backend)}")


def recovered(measure: dict[str, Any], step: StepResult) -> str:
    """The `reconnect_recovered` step: the recovery was measured (a reply came after the
    restart); its figure in words. StepFailed when it could not be."""
    figs = measure.get("reconnect")
    if not figs:
        raise StepFailed("no backend restart was recorded")
    who = f"the {figs['role']} {figs['program']}"
    if figs.get("recovery_ms") is None:
        raise StepFailed(f"no probe reply after {who}'s restart: no recovery to measure")
    rec = float(figs["recovery_ms"])
    step.figures["recovery_ms"] = rec
    seg = figs.get("segments") or {}
    parts = [f"{ms:.1f} ms {SEGMENT_WORDS.get(key, key)}" for key, ms in seg.items()]
    return (
        f"recovered in {rec:.1f} ms ± {float(figs.get('recovery_uncertainty_ms') or 0):.1f} ms "
        f"after {who}'s restart ({figs.get('lost', 0)} probes lost): {', '.join(parts)}"
    )
