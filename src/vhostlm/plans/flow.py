"""The plan's flow, written once for every case: prerequisites, receive, migrate, receive again.

`run_case(spec, env)` turns a `CaseSpec` into named steps. Each step is declared once (in
`BEFORE` and `AFTER` here, the legs' in `plans.leg` and `plans.kinds`); the planned list
that reports unrun steps as skipped is derived from the same declarations. The backend and
the guest come from their registries by name (the backend's: --backend, unless the spec
pins one), so a new backend or guest is a new module there, not a branch here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhostlm.apps.guest import Receiver
from vhostlm.apps.qemu import QemuVm, VmSpec, msix_vectors
from vhostlm.apps.testpmd import VERBOSE_RX_RE
from vhostlm.backends.base import CLIENT, BackendConfig, VhostBackend
from vhostlm.backends.registry import backend_class, make_backend
from vhostlm.errors import SetupError, StepFailed
from vhostlm.guests.base import Driver, Guest
from vhostlm.guests.disk import DiskGuest
from vhostlm.guests.registry import make_guest
from vhostlm.nodes.base import Node
from vhostlm.nodes.stream import ExpectTimeout
from vhostlm.plans.env import LabEnv
from vhostlm.plans.faults import NO_TRAFFIC, Vitals
from vhostlm.plans.integrity import IntegrityWatch
from vhostlm.plans.leg import Migration, Side, leg_step_names, prepare_tls
from vhostlm.plans.restart import QEMU_RECONNECT_MS, BackendRestart, recovered
from vhostlm.plans.spec import CaseSpec, Restart
from vhostlm.plans.steps import CaseAborted, CaseSkipped, StepDef, StepRunner, leg_suffix
from vhostlm.plans.traffic import Traffic, check_limits, check_measurement
from vhostlm.report.results import CaseResult, IntegrityFigures, StepResult
from vhostlm.rundir import RunDir

INCOMING_STEP = "incoming_vm"
INTACT_STEP = "guest_intact"


@dataclass(frozen=True)
class Drivers:
    """What the flow builds its programs with: the real ones, or fakes in a unit test."""

    backend: Callable[[str, BackendConfig], VhostBackend] = make_backend
    guest: Callable[[str], Guest] = make_guest
    vm: Callable[[VmSpec, RunDir, Node], QemuVm] = QemuVm
    traffic: Callable[[str, LabEnv, ExitStack, str], Traffic] = Traffic


class CaseFlow:
    """One run of one case: what its steps have started so far, and the steps themselves."""

    def __init__(self, spec: CaseSpec, env: LabEnv, drivers: Drivers | None = None) -> None:
        self.spec = spec
        if spec.rx_flood and env.options.probes:  # the flood takes the probes' path
            env = dataclasses.replace(env, options=dataclasses.replace(env.options, probes=False))
        self.env = env
        self.drivers = drivers or Drivers()
        self.guest: Guest = (
            DiskGuest(env.disk, spec.name) if env.disk else self.drivers.guest(spec.guest)
        )
        self.result = CaseResult(name=spec.name)
        self.vitals = Vitals()
        self.stack = ExitStack()
        self.backends: dict[str, VhostBackend] = {}
        self.sides: list[Side] = []
        self.receiver: Receiver = self.guest.receiver(spec.driver, env.options.probes, spec.queues)
        self.traffic: Traffic | None = None
        self.migration: Migration | None = None
        self._mark = 0  # the host backend's output before the guest driver started
        self.integrity = IntegrityWatch(spec.memcheck_mb(env.options.memcheck_region_mb))
        self._final: QemuVm | None = None  # the QEMU the guest runs on now
        self._t0 = time.time()
        self._boot_t0 = 0.0  # when the host's QEMU started

    # -- what the case is, from its spec and the options -----------------------------------

    def vcpus(self) -> int:
        """The guest's vCPUs: --guest-smp, else the case's own."""
        return self.env.options.guest_smp or self.spec.smp

    def vectors(self) -> int:
        """The NIC's MSI-X vectors on this QEMU and accelerator (0: INTx)."""
        return msix_vectors(self.spec.queues, self.env.accel, self.env.qemu_version)

    def legs(self) -> int:
        """How many migrations the case makes."""
        opts = self.env.options
        trips = opts.round_trips if opts.round_trips is not None else self.spec.round_trips
        return 2 * trips if trips else 1

    def before_steps(self) -> list[StepDef[CaseFlow]]:
        """The steps up to the first migration that apply to this case."""
        return [d for d in BEFORE if d.when(self.spec, self.env.options)]

    def after_steps(self) -> list[StepDef[CaseFlow]]:
        """The steps after the last migration that apply to this case."""
        return [d for d in AFTER if d.when(self.spec, self.env.options)]

    def planned_steps(self) -> list[str]:
        """Every step of the case, in order, so unrun ones can be reported as skipped."""
        steps = [d.named(self.spec) for d in self.before_steps()]
        for leg in range(self.legs()):
            if leg:
                steps.append(INCOMING_STEP + leg_suffix(leg))
            steps += leg_step_names(self.spec, self.env, leg)
        return steps + [d.named(self.spec) for d in self.after_steps()]

    def options(self) -> dict[str, Any]:
        """The case's shape as results.json's `options` records it."""
        opts = self.env.options
        return {
            "probes": opts.probes,
            "pps": opts.rate,
            "guest_mem_mb": opts.guest_mem_mb,
            "guest_smp": self.vcpus(),
            "queues": self.spec.queues,
            "vectors": self.vectors(),
            "packed": self.spec.packed,
            "cpu": self.env.cpu,
            "switch_learning": opts.switch_learning,
            "migrations": self.legs(),
            "guest_memory": opts.guest_memory,
            "backend": self.backend_name(),
            "vhost_mode": self.vhost_mode(),
            "qemu_reconnect_ms": self.qemu_reconnect_ms(),
            "probe_size": opts.probe_size if opts.probes else 0,
            "memcheck_mb": self.integrity.memcheck_mb,
            "qemu": self.env.bed.tools("host").qemu,
        }

    # -- running ---------------------------------------------------------------------------

    def run(self) -> CaseResult:
        """Run every step; whatever happens, stop what the case started."""
        result, env = self.result, self.env
        runner = StepRunner(result, env.progress, self.planned_steps())
        start = time.monotonic()
        stopping = [0.0]

        def stopped() -> None:
            result.phases["stop_s"] = round(time.monotonic() - stopping[0], 3)

        try:
            with self.stack as stack:
                stack.callback(stopped)  # registered first, so it runs after every stop
                try:
                    self._steps(runner)
                finally:
                    env.progress.phase(self.spec.name, "stopping")
                    stopping[0] = time.monotonic()
        except CaseSkipped as exc:
            runner.skip_rest(f"not run: {exc}")
            result.verdict, result.reason = "skip", str(exc)
        except CaseAborted as exc:
            if str(exc).startswith(NO_TRAFFIC) and not result.reason:
                result.reason = str(exc)  # the tester, not the guest: say so first
            runner.skip_rest("not run: an earlier step did not pass")
        finally:
            result.duration_s = round(time.monotonic() - start, 3)
        result.finish()
        self._blame_integrity()
        return result

    def _blame_integrity(self) -> None:
        """A case that failed before its integrity step names what that check found first:
        a stale page is the cause of a guest that then crashed or went silent."""
        result, why = self.result, self.result.integrity.failure
        ran = any(s.name == INTACT_STEP and s.verdict != "skip" for s in result.steps)
        if why and not ran and result.verdict in ("fail", "error"):
            result.reason = f"{why}; then {result.reason}" if result.reason else why
            result.verdict = "fail"

    def _run(self, runner: StepRunner, defs: list[StepDef[CaseFlow]]) -> None:
        for d in defs:
            with runner.step(d.named(self.spec), d.seed) as step:
                d.run(self, step)

    def _steps(self, runner: StepRunner) -> None:
        self.result.options = self.options()
        runner.explain = self.vitals.explain
        prepare_tls(self.env)
        self._run(runner, self.before_steps())
        assert self.traffic is not None
        self.migration = mig = Migration(
            self.spec,
            self.env,
            runner,
            self.receiver,
            self.traffic,
            self.result,
            self.vitals,
            self.backends,
        )
        try:
            for leg in range(self.legs()):
                a, b = self.sides[leg % 2], self.sides[(leg + 1) % 2]
                if leg:
                    with runner.step(INCOMING_STEP + leg_suffix(leg)):
                        b = self.sides[(leg + 1) % 2] = self._incoming(b.role, leg)
                mig.leg(leg, a, b)
                self._switched(a.vm, b.vm)
                if self.spec.kind.moves_guest:
                    self.vitals.retire(a.vm.process)
                    a.vm.stop()  # the source ends in postmigrate: its job is done
        finally:
            self.vitals.retire_tester()  # the traffic ends here, on purpose or by a failure
            self.result.measure = self.traffic.finish(mig.figures)
            self.result.traffic.sent = self.traffic.sent()
            self.result.integrity = self._integrity(wait=False)
        self._run(runner, self.after_steps())

    def _switched(self, src: QemuVm, dst: QemuVm) -> None:
        """After a leg the guest runs on `dst`, a fresh QEMU whose checker output is all
        from after the switch-over; or, when the kind keeps it there, still on `src`."""
        self._final = dst if self.spec.kind.moves_guest else src

    def _integrity(self, wait: bool) -> IntegrityFigures:
        """The integrity figures now; with `wait`, once the checker scanned after the
        switch-over."""
        payload = self.traffic.payload if self.traffic is not None else {}
        backends = list(self.backends.items())
        ram = self.migration.ram_diffs if self.migration is not None else []
        restarts = [r.span() for r in self.traffic.restarts] if self.traffic is not None else []
        return self.integrity.collect(payload, self._final, backends, self._t0, wait, ram,
                                      restarts)  # fmt: skip

    # -- the steps before the first migration and after the last ---------------------------

    def backend_name(self) -> str:
        """The vhost-user backend of this case: the one its spec pins, else --backend."""
        return self.spec.backend or self.env.options.backend

    def _backend(self, role: str) -> VhostBackend:
        """Start the role's vhost-user backend (stopped by the case's stack); a case the
        backend cannot run (a feature it lacks) is skipped before anything starts."""
        env, spec = self.env, self.spec
        bed = env.bed
        name = self.backend_name()
        cls = backend_class(name)
        why = cls.unsupported(spec.backend_needs | self._mode_needs())
        if why:
            raise CaseSkipped(f"not on --backend {name}: {why}")
        sock = self.vhost_socket(role)
        bed.claim_socket(role, sock)
        config = BackendConfig(
            name=f"{spec.name}-{name}-{role}",
            node=bed.node(role),
            rundir=env.rundir,
            socket=sock,
            nic=bed.nic(role),
            hugedir=bed.hugedir(role),
            binary=cls.binary(bed.tools(role)),
            file_prefix=f"vhostlm-{env.rundir.run_id}-{spec.name}-{role}",
            queues=spec.queues,
            postcopy=spec.kind.postcopy,
            flood=spec.rx_flood,
            client=self.vhost_mode() == "client",
        )
        backend = self.drivers.backend(name, config)
        self.stack.callback(backend.stop)
        backend.start()
        self.vitals.watch(f"the {role} {backend.program}", backend.process, role)
        self.backends[role] = backend
        return backend

    def vhost_mode(self) -> str:
        """The vhost-user mode of this case: the one its spec pins, else --vhost-mode."""
        return self.spec.vhost_mode or self.env.options.vhost_mode

    def qemu_reconnect_ms(self) -> int:
        """QEMU's vhost-user reconnect delay (`VmSpec.reconnect_ms`): in a case that restarts
        a server-mode backend QEMU is the client and must connect to the new process by
        itself, so every QEMU of the case has it (whichever side restarts, the migration's
        round trips included); 0 elsewhere, where a backend gone is a fault to report and a
        QEMU with no backend to connect to at its start fails at once instead of waiting."""
        if self.spec.restart is not None and self.vhost_mode() == "server":
            return QEMU_RECONNECT_MS
        return 0

    def _mode_needs(self) -> frozenset[str]:
        """What the vhost-user mode asks of the backend (client mode: it connects to QEMU)."""
        return frozenset({CLIENT}) if self.vhost_mode() == "client" else frozenset()

    def vhost_socket(self, role: str) -> str:
        """The vhost-user socket of `role`'s backend, on its node."""
        return self.env.bed.socket_path(role, f"{self.spec.name}-{role}-vhost.sock")

    def _vm(self, role: str, leg: int, incoming: bool) -> QemuVm:
        env, spec = self.env, self.spec
        bed = env.bed
        tag = f"{spec.name}-{role}" + (f"{leg + 1}" if leg else "")
        boot = self.guest.boot_files(bed, role)
        vm_spec = VmSpec(
            name=tag,
            kernel=boot.kernel,
            initrd=boot.initrd,
            vhost_socket=Path(self.vhost_socket(role)),
            qmp_socket=Path(bed.socket_path(role, f"{tag}-qmp.sock")),
            console_socket=Path(bed.socket_path(role, f"{tag}-console.sock")),
            accel=env.accel,
            cpu=env.cpu,
            mem_mb=env.options.guest_mem_mb,
            smp=self.vcpus(),
            mem_path=(Path(bed.hugedir(role)) if env.options.guest_memory == "hugetlbfs" else None),
            queues=spec.queues,
            vectors=self.vectors(),
            packed=spec.packed,
            incoming=(f"tcp:{bed.migration_ip(role)}:{bed.migration_port}" if incoming else None),
            defer_incoming=incoming and spec.kind.defer_incoming,
            hold=incoming and env.options.verify_ram and not spec.kind.postcopy,
            vhost_server=self.vhost_mode() == "client",
            reconnect_ms=self.qemu_reconnect_ms(),
            qemu_version=env.qemu_version,
            binary=bed.tools(role).qemu,
            disk=boot.disk,
            boot_disk=boot.boot_disk,
            tools_disk=boot.tools_disk,
            check_socket=(
                Path(bed.socket_path(role, f"{tag}-memcheck.sock"))
                if self.integrity.memcheck_mb
                else None
            ),
        )
        vm = self.drivers.vm(vm_spec, env.rundir, bed.node(role))
        self.integrity.vms.append(vm)
        return vm

    def _incoming(self, role: str, leg: int) -> Side:
        """Start the paused twin with `-incoming` on `role` (stopped by the case's stack)."""
        vm = self._vm(role, leg, incoming=True)
        self.stack.callback(vm.stop)
        sock = self.vhost_socket(role)
        try:
            vm.start()
        except SetupError as exc:
            if role not in self.backends or not vm.node.exists(sock):
                how = (
                    "nothing connected to" if vm.spec.vhost_server else "QEMU could not connect to"
                )
                raise StepFailed(
                    f"no vhost-user backend on the {role}: {how} {sock} ({exc})"
                ) from exc
            raise
        self.vitals.watch(f"the {role} QEMU {vm.spec.name}", vm.process, role)
        self.env.bed.secure_sockets(role, self.env.rundir.sockets)
        return Side(role, vm, self.guest.shell(vm))

    def host_backend(self, step: StepResult) -> None:
        """Prerequisite 2: the host's backend, forwarding unless the case starts it late."""
        backend = self._backend("host")
        if not self.spec.late_start:
            backend.forward()

    def host_vm(self, step: StepResult) -> None:
        """Prerequisite 3: the guest's QEMU starts on the host; it boots while the backup's
        backend and incoming QEMU start (they do not depend on it), `guest_boots` waits."""
        self.guest.prepare(self.env.bed, self.env.rundir, self.stack)
        vm = self._vm("host", 0, incoming=False)
        self.stack.callback(vm.stop)
        self._boot_t0 = time.monotonic()
        vm.start()
        self.vitals.watch(f"the host QEMU {vm.spec.name}", vm.process, "host")
        self.env.bed.secure_sockets("host", self.env.rundir.sockets)
        self.sides.append(Side("host", vm, self.guest.shell(vm)))
        self._final = vm

    def guest_boots(self, step: StepResult) -> None:
        """The host's guest has booted to a shell (boot_s from its QEMU's start)."""
        vm = self.sides[0].vm
        shell = self.guest.wait_shell(vm, self.env.options.boot_timeout_s)
        self.sides[0] = Side("host", vm, shell)
        step.figures["boot_s"] = round(time.monotonic() - self._boot_t0, 2)

    def backup_backend(self, step: StepResult) -> None:
        """Prerequisite 4: the same backend on the backup (unless --no-backup-backend)."""
        if not self.env.options.backup_backend:
            step.verdict = "skip"
            backend = self.backend_name()
            step.detail = f"no vhost {backend} started on the backup (--no-backup-backend)"
            return
        self._backend("backup").forward()

    def backup_vm(self, step: StepResult) -> None:
        """Prerequisite 5: the twin QEMU waits with `-incoming` on the backup."""
        self.sides.append(self._incoming("backup", 0))

    def guest_memcheck(self, step: StepResult) -> None:
        """The memory checker owns its share of guest RAM and starts rewriting it."""
        src = self.sides[0]
        step.detail = self.integrity.start_memcheck(src.vm, src.shell)
        step.figures["memcheck_mb"] = self.integrity.memcheck_mb

    def guest_driver(self, step: StepResult) -> None:
        """Step 7: the guest's driver up (testpmd in the guest, or the kernel's link)."""
        host = self.backends["host"]
        self._mark = host.mark() if self.spec.reconnects else 0
        self.receiver.start(self.sides[0].shell)
        if self.spec.late_start:
            host.forward()
            self.receiver.commands.append(f"(host {host.program}) start")
        step.detail = " && ".join(self.receiver.commands)[-300:]

    def vhost_connected(self, step: StepResult) -> None:
        """Step 8: the host's backend reports the guest's virtio device ready."""
        try:
            step.detail = self.backends["host"].wait_guest_ready(30, since=self._mark).strip()
        except ExpectTimeout as exc:
            raise StepFailed(
                f"host vhost PMD never reported the guest's virtio device ready: {exc}"
            ) from exc

    def guest_receives(self, step: StepResult) -> None:
        """Step 9: tester traffic starts; the guest receives (and answers a second of probes)."""
        opts, src = self.env.options, self.sides[0]
        mac = src.vm.spec.mac  # announcements are of the guest's own MAC, not --dst-mac's
        self.traffic = traffic = self.drivers.traffic(self.spec.name, self.env, self.stack, mac)
        traffic.start()
        self.vitals.watch_tester(traffic.tester)
        got = self.receiver.wait_count(src.shell, 1, 30)
        if got is None:
            raise StepFailed(f"the guest received no packet in 30 s ({traffic.sent()} sent)")
        step.figures["received"] = got
        if opts.probes:
            # a steady second of answered probes before migrating: the baseline
            want = max(1, int(opts.rate * opts.warmup_s))
            if not traffic.wait_replies(want, 30):
                answered = traffic.tester.progress()[1]
                raise StepFailed(
                    f"the guest received {got} packets but answered {answered} of "
                    f"{traffic.sent()} probes in 30 s (wanted {want})"
                )
            step.detail = f"guest rx counter {got}; {want} probes answered"
        elif self.spec.driver is Driver.PMD:  # the seed's `set verbose 1` lines
            src.vm.console.output.expect(VERBOSE_RX_RE, 10)
            step.detail = f"port 0/queue 0: received ... (guest rx counter {got})"
        else:
            step.detail = f"guest rx counter {got}"

    def dirty_load(self, step: StepResult) -> None:
        """A memory-dirtying load in the guest, at the case's rate."""
        step.detail = self.guest.start_dirty_load(self.sides[0].shell, self.spec.dirty_mb_s)

    def restart_source(self, step: StepResult) -> None:
        """Reconnect case: the host's backend restarted before the migration starts; it
        must reconnect and the guest answer again (`plans.restart`)."""
        assert self.traffic is not None
        restart = BackendRestart(self.backends, self.vitals, self.traffic, self.receiver,
                                 self.env.options)  # fmt: skip
        restart.run("host", self.sides[0].shell, step)

    def reconnect_recovered(self, step: StepResult) -> None:
        """The backend restart's recovery was measured by the probes (`measure.reconnect`)."""
        step.detail = recovered(self.result.measure, step)

    def guest_intact(self, step: StepResult) -> None:
        """The guest is whole: payloads, memory pages, no sign of lost state in any log."""
        figures = self.result.integrity = self._integrity(wait=True)
        if figures.failure:
            raise StepFailed(figures.failure)
        parts = []
        if "payload" in figures.checks:
            parts.append(f"{figures.payload_checked} probe payloads intact")
        if "memory" in figures.checks:
            parts.append(
                f"{figures.pages_checked} pages of {figures.memcheck_mb} MiB intact "
                f"({figures.memcheck_scans} scans after the switch-over)"
            )
        parts.append(f"{len(figures.anomalies)} log warnings")
        step.detail = ", ".join(parts)

    def outage_sound(self, step: StepResult) -> None:
        """The outage is the guest's: the tester neither stalled nor dropped at its edges,
        no probe was lost where the migration does not explain it; its uncertainty."""
        step.detail = check_measurement(self.result.measure)

    def within_limits(self, step: StepResult) -> None:
        """--max-outage-ms / --max-loss against the measured figures."""
        opts = self.env.options
        step.detail = check_limits(self.result.measure, opts.max_outage_ms, opts.max_loss)


def _loads(spec: CaseSpec, _options: Any) -> bool:
    return spec.dirty_mb_s > 0


def _memcheck(spec: CaseSpec, options: Any) -> bool:
    return bool(spec.memcheck_mb(options.memcheck_region_mb))


def _switch_over_probed(spec: CaseSpec, options: Any) -> bool:
    """Probes, and a switch-over whose outage they measure (not a cancelled migration)."""
    return bool(options.probes) and spec.kind.moves_guest


def _restarts_source(spec: CaseSpec, _options: Any) -> bool:
    return spec.restart is Restart.SOURCE


def _restart_probed(spec: CaseSpec, options: Any) -> bool:
    return spec.restart is not None and bool(options.probes)


def _limited(_spec: CaseSpec, options: Any) -> bool:
    return options.max_outage_ms is not None or options.max_loss is not None


BEFORE: tuple[StepDef[CaseFlow], ...] = (
    StepDef("host_testpmd", CaseFlow.host_backend, "prerequisite 2"),
    StepDef("host_vm", CaseFlow.host_vm, "prerequisite 3"),
    StepDef("backup_testpmd", CaseFlow.backup_backend, "prerequisite 4"),
    StepDef("backup_vm", CaseFlow.backup_vm, "prerequisite 5"),
    StepDef("guest_boots", CaseFlow.guest_boots, "prerequisite 3"),
    StepDef("guest_memcheck", CaseFlow.guest_memcheck, when=_memcheck),
    StepDef("guest_driver", CaseFlow.guest_driver, "step 7", name_of=lambda s: s.driver_step),
    StepDef("vhost_connected", CaseFlow.vhost_connected, "step 8"),
    StepDef("guest_receives", CaseFlow.guest_receives, "step 9"),
    StepDef("guest_dirty_load", CaseFlow.dirty_load, when=_loads),
    StepDef("restart_source_backend", CaseFlow.restart_source, when=_restarts_source),
)
AFTER: tuple[StepDef[CaseFlow], ...] = (
    StepDef(INTACT_STEP, CaseFlow.guest_intact),
    StepDef("outage_sound", CaseFlow.outage_sound, when=_switch_over_probed),
    StepDef("reconnect_recovered", CaseFlow.reconnect_recovered, when=_restart_probed),
    StepDef("within_limits", CaseFlow.within_limits, when=_limited),
)


def run_case(spec: CaseSpec, env: LabEnv, drivers: Drivers | None = None) -> CaseResult:
    """Run the case `spec` on `env`; its result, whatever happened."""
    return CaseFlow(spec, env, drivers).run()
