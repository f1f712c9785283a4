"""Whether the migrated guest is whole: the memory checker, probe payloads, programs' logs.

Packets flowing again after the switch-over does not prove the destination runs on the
guest's memory: a page the backend or the guest wrote that was never marked dirty arrives
stale. Three checks catch that directly, each by name: the probe payloads the tester
verified (`measure.payload`), the in-guest memory checker's scans on its own serial port
(`guests.memcheck`), and the known signs of lost state in what both backends, both QEMUs
and the guest consoles printed (`integrity.anomalies`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from vhostlm.apps.console import GuestShell
from vhostlm.apps.qemu import QemuVm
from vhostlm.backends.base import VhostBackend
from vhostlm.errors import SetupError
from vhostlm.guests.memcheck import MEMCHECK_BIN, MemcheckSummary, memcheck_command, summarise
from vhostlm.integrity.anomalies import (
    Anomaly,
    anomaly_failure,
    as_dicts,
    expected_at_restart,
    scan_logs,
)
from vhostlm.integrity.ramdiff import RamDiff
from vhostlm.measure.payload import payload_failure
from vhostlm.report.results import IntegrityFigures

# The checker's rewrite rate, MiB/s: dirtying enough that a lost write is likely to be
# hit during a migration, little enough that every case still converges under TCG here.
MEMCHECK_RATE_MB_S = 8
MEMCHECK_TTY = "/dev/ttyS1"  # the guest's second serial port: QemuVm.checker
READY_TIMEOUT_S = 60.0
SCANS_AFTER = 2  # the second scan after the switch-over ran wholly on the destination
SCAN_TIMEOUT_S = 15.0
BAD_SAMPLES = 8


@dataclass
class IntegrityWatch:
    """What one case's integrity checks need: the checker's size, every QEMU and backend."""

    memcheck_mb: int
    rate_mb_s: int = MEMCHECK_RATE_MB_S
    vms: list[QemuVm] = field(default_factory=list)
    started_at: float = 0.0  # when the checker was ready (epoch s); 0: not started

    def start_memcheck(self, vm: QemuVm, shell: GuestShell) -> str:
        """Start the checker in the guest on `vm`; wait until it owns its region."""
        if vm.checker is None:
            raise SetupError(f"QEMU {vm.spec.name} has no memory checker port")
        mark = vm.checker.output.mark()
        cmd = memcheck_command(self.memcheck_mb, self.rate_mb_s, MEMCHECK_TTY)
        shell.run(cmd)
        # its errors (and the shell's word that it could not start or died) are
        # "vhostlm-memcheck: ..." lines on the same port
        found = vm.checker.output.expect(
            rf"(?:VHLMC (ready .*)|{MEMCHECK_BIN}: (.*))\n", READY_TIMEOUT_S,
            alive=vm.process.alive, since=mark,
        )  # fmt: skip
        if found.group(2) is not None:
            raise SetupError(f"the guest's memory checker: {found.group(2).strip()}")
        self.started_at = time.time()
        return f"{cmd.rstrip(' &')}: {found.group(1).strip()}"

    def memory(self, final: QemuVm | None, wait: bool) -> MemcheckSummary:
        """The checker's summary on `final`, the QEMU the guest runs on now. With `wait`,
        from SCANS_AFTER scans that start from now on (the last of them wholly after every
        step before it); else from all it printed there so far."""
        if final is None or final.checker is None:
            return MemcheckSummary()
        out = final.checker.output
        since = out.mark() if wait else 0

        def enough(text: str) -> bool:
            return summarise(text[since:]).scan_lines >= SCANS_AFTER

        if wait:
            out.wait_for(enough, SCAN_TIMEOUT_S)
        return summarise(out.text()[since:])

    def bad_pages(self, t0: float) -> list[dict[str, Any]]:
        """The bad pages every checker channel reported (source and destinations), each
        with the time its line arrived (ms from `t0`)."""
        found: list[dict[str, Any]] = []
        seen: set[tuple[str, int]] = set()
        for vm in self.vms:
            if vm.checker is None:
                continue
            arrived = {
                line.split()[2]: at
                for at, line in reversed(vm.checker.output.timed_lines())
                if line.startswith("VHLMC bad page=")
            }
            for bad in summarise(vm.checker.output.text()).bad:
                if (vm.spec.name, bad.page) not in seen:
                    seen.add((vm.spec.name, bad.page))
                    at = arrived.get(f"page={bad.page}")
                    found.append(
                        {"vm": vm.spec.name, "gpa_hex": f"{bad.gpa:#x}", **asdict(bad),
                         "at_ms": round((at - t0) * 1000, 1) if at is not None else None}
                    )  # fmt: skip
        return found[:BAD_SAMPLES]

    def anomalies(
        self,
        backends: list[tuple[str, VhostBackend]],
        until: float,
        restarts: list[tuple[float, float]] | None = None,
    ) -> list[Anomaly]:
        """The known signs of lost state in every program's output up to `until`; inside
        `restarts` (a backend restarted on purpose) QEMU's lines about it are expected."""
        sources: list[tuple[str, str, list[tuple[float, str]]]] = []
        for role, backend in backends:  # every process of it: a restarted one's too
            lines = [line for p in backend.processes for line in p.output.timed_lines()]
            sources.append((f"{role} {backend.program}", "backend", lines))
        for vm in self.vms:
            sources.append((f"QEMU {vm.spec.name}", "qemu", vm.process.output.timed_lines()))
            lines = vm.console.output.timed_lines()
            sources.append((f"guest console {vm.spec.name}", "guest", lines))
        return expected_at_restart(scan_logs(sources, until), restarts or [])

    def collect(
        self,
        payload: dict[str, Any],
        final: QemuVm | None,
        backends: list[tuple[str, VhostBackend]],
        t0: float,
        wait: bool,
        ram: list[RamDiff] | None = None,
        restarts: list[tuple[float, float]] | None = None,
    ) -> IntegrityFigures:
        """Every check's figures, and the first failure in words (payload, memory, logs)."""
        until = time.time()
        figures = IntegrityFigures()
        failures: list[str] = []
        if payload:
            figures.checks.append("payload")
            figures.payload_checked = int(payload.get("payload_checked", 0))
            figures.payload_corrupt = int(payload.get("payload_corrupt", 0))
            figures.payload_foreign = int(payload.get("payload_foreign", 0))
            figures.payload_truncated = int(payload.get("payload_truncated", 0))
            figures.payload_samples = list(payload.get("samples", []))
            why = payload_failure(payload)
            if why is not None:
                failures.append(why)
        if ram:
            figures.checks.append("ram")
            figures.ram = [diff.as_dict() for diff in ram]
            figures.ram_pages_differ = sum(diff.pages_differ for diff in ram)
            failures += [why for diff in ram if (why := diff.failure()) is not None][:1]
        if self.started_at:
            figures.checks.append("memory")
            figures.memcheck_mb = self.memcheck_mb
            figures.memcheck_dirty_mb_s = float(self.rate_mb_s)
            summary = self.memory(final, wait)
            figures.memcheck_scans = summary.scans
            figures.pages_checked = summary.pages_checked
            figures.bad_pages = self.bad_pages(t0)
            figures.pages_bad = max(summary.pages_bad, len(figures.bad_pages))
            if figures.bad_pages:
                first = figures.bad_pages[0]
                failures.append(
                    f"guest memory: {figures.pages_bad} bad page(s), the first {first['kind']} "
                    f"at guest-physical {first['gpa_hex']} (page {first['page']} holds "
                    f"generation {first['seen_gen']}, expected {first['expect_gen']}; first "
                    f"bad byte at offset {first['offset']}) on {first['vm']}"
                )
            elif summary.errors:
                failures.append(f"the memory checker failed: {summary.errors[0]}")
            elif wait and final is not None and summary.scans == 0:
                failures.append("the memory checker printed no complete scan after the switch-over")
        figures.checks.append("anomalies")
        found = self.anomalies(backends, until, restarts)
        figures.anomalies = as_dicts(found, t0)
        why = anomaly_failure(found)
        if why is not None:
            failures.append(why)
        figures.failure = failures[0] if failures else ""
        return figures
