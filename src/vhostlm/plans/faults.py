"""Telling a fault in the test bed from a failed check, so a case's reason names the cause.

A case owns processes it cannot do without: both testpmds, both QEMUs, the tester. When
one of them dies (an admin's `kill`, the OOM killer, a crash) the step that notices first
usually sees only a symptom ("the guest received 0 packets"). `Vitals` keeps the
processes by what they are to a person ("the backup testpmd") and turns a step's failure
into one that names the dead process; a tester that died or stopped sending makes the
case fail as "no traffic", never pass.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vhostlm.errors import StepFailed
from vhostlm.measure.tester import PROGRESS_RE, Tester

NO_TRAFFIC = "no traffic"
STALL_S = 3.0  # the tester reports every 0.1 s (probes) or 0.5 s (seed stream)


def exit_description(returncode: int | None) -> str:
    """How a process ended, in words: 'was killed by SIGKILL' or 'exited with status 1'."""
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


class Process(Protocol):
    """What is watched of a program: its pid and, once it ended, its exit status (a local
    process or one on a testbed node alike)."""

    @property
    def pid(self) -> int:
        """Its process id."""
        ...

    @property
    def returncode(self) -> int | None:
        """Exit status once ended (negative: killed by that signal)."""
        ...


@dataclass
class Watched:
    """One process a case depends on, and what it is called in a reason."""

    label: str
    process: Process
    role: str  # host | backup | tester


class Vitals:
    """The processes of one case that must stay up while it runs."""

    def __init__(self) -> None:
        self._watched: list[Watched] = []
        self.tester: Tester | None = None

    def watch(self, label: str, process: Process, role: str) -> None:
        """Watch `process` (called `label`, e.g. 'the backup testpmd') from now on."""
        self._watched.append(Watched(label, process, role))

    def watch_tester(self, tester: Tester) -> None:
        """Watch the tester: its death or a stalled sent counter means no traffic."""
        self.tester = tester

    def retire_tester(self) -> None:
        """The case stops the tester on purpose (its traffic is done): no fault from now."""
        self.tester = None

    def retire(self, process: Process) -> None:
        """The case stops `process` on purpose: its end is no fault."""
        self._watched = [w for w in self._watched if w.process is not process]

    def casualties(self, role: str | None = None) -> list[str]:
        """One line per watched process (of `role`, or all) that has ended."""
        return [
            f"{w.label} (pid {w.process.pid}) {exit_description(w.process.returncode)}"
            for w in self._watched
            if (role is None or w.role == role) and w.process.returncode is not None
        ]

    def no_traffic(self, stall_s: float = STALL_S) -> str | None:
        """Why the tester is not sending ("no traffic: ..."), or None while it sends.

        Waits up to `stall_s` for the tester's sent counter to move past its last value.
        """
        tester = self.tester
        if tester is None:
            return None
        sent = tester.progress()[0]
        if tester.process.returncode is not None:
            how = exit_description(tester.process.returncode)
            return f"{NO_TRAFFIC}: the tester (pid {tester.process.pid}) {how} after sending {sent}"
        if not tester.process.output.wait_for(_sent_beyond(sent), stall_s):
            if tester.process.returncode is not None:
                return self.no_traffic(0)
            return (
                f"{NO_TRAFFIC}: the tester (pid {tester.process.pid}) stopped sending: "
                f"its sent counter stayed at {sent} for {stall_s:g} s"
            )
        return None

    def check_traffic(self) -> None:
        """StepFailed("no traffic: ...") unless the tester is still sending."""
        why = self.no_traffic()
        if why is not None:
            raise StepFailed(why)

    def check(self, role: str, when: str) -> None:
        """StepFailed naming every watched process of `role` that ended (e.g. 'before the
        switch-over')."""
        dead = self.casualties(role)
        if dead:
            raise StepFailed(f"{'; '.join(dead)} {when}")

    def explain(self, detail: str) -> tuple[str, bool]:
        """A failed step's detail with its cause; True when the cause is a fault of the
        test bed (a dead process or no traffic) rather than the check itself."""
        why = self.no_traffic() if not detail.startswith(NO_TRAFFIC) else None
        if why is not None:
            return f"{why} ({detail})", True
        dead = [c for c in self.casualties() if c.split(" (pid ")[0] not in detail]
        if dead:
            return f"{detail}; {'; '.join(dead)}", True
        return detail, detail.startswith(NO_TRAFFIC) or bool(self.casualties())


def _sent_beyond(sent: int) -> Callable[[str], bool]:
    def moved(text: str) -> bool:
        found = PROGRESS_RE.findall(text[-400:])
        return bool(found) and int(found[-1][0]) > sent

    return moved
