"""The plan's flow, written once: prerequisites, receive, migrate, receive again.

A case subclasses `MigrationCase` and sets what differs: how the guest receives (the
`Receiver`), the device shape (packed ring, queues), when the vhost side starts, and the
migration variant (round trips, postcopy, multifd, parameters, cancel, non-convergence).
Everything else (testpmd with a vhost port on host and backup, the guest and its twin
with `-incoming`, tester traffic, the migration from QMP, the figures) is shared.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vhostlm.apps.console import GuestShell
from vhostlm.apps.guest import Receiver
from vhostlm.apps.qemu import QemuVm, VmSpec, msix_vectors
from vhostlm.apps.testpmd import VERBOSE_RX_RE, TestPmd, check_socket_free, testpmd_argv
from vhostlm.errors import SetupError, StepFailed
from vhostlm.image.build import READY_MARKER
from vhostlm.nodes.sockets import secure_sockets
from vhostlm.nodes.stream import ExpectTimeout
from vhostlm.plans.env import LabEnv
from vhostlm.plans.faults import NO_TRAFFIC, Vitals
from vhostlm.plans.migrate import Migration
from vhostlm.plans.steps import CaseAborted, CaseSkipped, StepRunner, leg_suffix
from vhostlm.plans.traffic import Traffic, check_limits
from vhostlm.report.results import CaseResult

TESTPMD_BINARY = "dpdk-testpmd"
TESTPMD_MB = 128  # hugepage memory of each vhost testpmd
TESTPMD_MBUFS = 16384  # testpmd's default pool would take ~600 MiB of hugepages


def prerequisite_steps() -> list[str]:
    """Steps 2-5 of the seed's prerequisites, the same for every case."""
    return ["host_testpmd", "host_vm", "backup_testpmd", "backup_vm"]


@dataclass
class Side:
    """One end of a migration: its role, its QEMU and the shell on its console."""

    role: str
    vm: QemuVm
    shell: GuestShell


class MigrationCase:
    """One case: a guest receiving tester traffic across one or more live migrations."""

    name = ""
    driver_step = "guest_driver"
    reconnects = False  # True: the guest driver re-initialises the device (virtio-pmd)
    packed = False
    queues = 1
    late_start = False  # the vhost side's `start` only once the guest driver is up
    variant = "plain"  # plain | cancel | no_converge
    round_trips = 0  # 0: one migration to the backup; N: N times there and back
    capabilities: ClassVar[dict[str, bool]] = {}
    parameters: ClassVar[dict[str, Any]] = {}
    postcopy = False
    dirty_mb_s = 0  # a memory-dirtying load in the guest, MB/s
    # vCPUs, as the seed's `-smp 2`: testpmd in the guest needs a main and a forwarding
    # lcore. (1 vCPU was the default while QEMU 7.2's TCG dirty tracking broke 2-vCPU guests.)
    smp = 2

    def receiver(self, probes: bool) -> Receiver:
        """The guest-side receiver of this case (answering probes when `probes`)."""
        raise NotImplementedError

    @classmethod
    def description(cls) -> str:
        """First line of the case's docstring, for `vhostlm list`."""
        return (cls.__doc__ or "").strip().splitlines()[0]

    def vcpus(self, env: LabEnv) -> int:
        """The guest's vCPUs: --guest-smp, else the case's own."""
        return env.options.guest_smp or self.smp

    def vectors(self, env: LabEnv) -> int:
        """The NIC's MSI-X vectors on this QEMU and accelerator (0: INTx)."""
        return msix_vectors(self.queues, env.accel, env.qemu_version)

    def legs(self, env: LabEnv) -> int:
        """How many migrations the case makes."""
        trips = env.options.round_trips if env.options.round_trips is not None else self.round_trips
        return 2 * trips if trips else 1

    def leg_steps(self, leg: int) -> list[str]:
        """The steps of migration number `leg` (0-based); later legs get a suffix."""
        steps = ["migration_active"]
        if self.queues > 1:
            steps.append("guest_queues_during_migration")
        steps.append("receives_during_migration")
        if self.postcopy:
            steps.append("postcopy_active")
        if self.variant == "cancel":
            steps += ["migration_cancelled", "source_keeps_receiving"]
        elif self.variant == "no_converge":
            steps += ["did_not_converge", "source_keeps_receiving"]
        else:
            steps += ["migration_completed", "receives_after_migration"]
        return [s + leg_suffix(leg) for s in steps]

    def planned_steps(self, env: LabEnv) -> list[str]:
        """Every step of the case, in order, so unrun ones can be reported as skipped."""
        steps = [*prerequisite_steps(), self.driver_step, "vhost_connected", "guest_receives"]
        if self.dirty_mb_s:
            steps.append("guest_dirty_load")
        for leg in range(self.legs(env)):
            if leg:
                steps.append("incoming_vm" + leg_suffix(leg))
            steps += self.leg_steps(leg)
        if env.options.max_outage_ms is not None or env.options.max_loss is not None:
            steps.append("within_limits")
        return steps

    def run(self, env: LabEnv) -> CaseResult:
        """Run every step; whatever happens, stop what the case started."""
        result = CaseResult(name=self.name)
        runner = StepRunner(result, env.progress, self.planned_steps(env))
        start = time.monotonic()
        stopping = [0.0]

        def stopped() -> None:
            result.phases["stop_s"] = round(time.monotonic() - stopping[0], 3)

        try:
            with ExitStack() as stack:
                stack.callback(stopped)  # registered first, so it runs after every stop
                try:
                    self._body(env, runner, stack, result)
                finally:
                    env.progress.phase(self.name, "stopping")
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
        return result

    def _testpmd(self, env: LabEnv, role: str) -> TestPmd:
        bed = env.bed
        sock = self.vhost_socket(env, role)
        if bed.kind == "lab":  # on a testbed the run's directory is new: nothing listens
            check_socket_free(Path(sock))
        vhost = f"net_vhost0,iface={sock},queues={self.queues}"
        if self.postcopy:
            vhost += ",postcopy-support=1"
        app = [f"--total-num-mbufs={TESTPMD_MBUFS}"]
        if self.queues > 1:
            app += [f"--rxq={self.queues}", f"--txq={self.queues}"]
        nic = bed.nic(role)
        vdevs, eal = nic.testpmd_ports(self.queues)
        argv = testpmd_argv(
            bed.tools(role).testpmd,
            "0-1",
            [vhost, *vdevs],
            file_prefix=f"vhostlm-{env.rundir.run_id}-{self.name}-{role}",
            huge_dir=bed.hugedir(role),
            mem_mb=TESTPMD_MB,
            app_args=app,
            eal_extra=eal,
            no_pci=nic.pci is None,
        )
        return TestPmd(f"{self.name}-testpmd-{role}", argv, env.rundir, bed.node(role))

    def vhost_socket(self, env: LabEnv, role: str) -> str:
        """The vhost-user socket of `role`'s testpmd, on its node."""
        return env.bed.socket_path(role, f"{self.name}-{role}-vhost.sock")

    def _vm(self, env: LabEnv, role: str, leg: int, incoming: bool) -> QemuVm:
        bed = env.bed
        tag = f"{self.name}-{role}" + (f"{leg + 1}" if leg else "")
        kernel, initrd = bed.guest_files(role)
        spec = VmSpec(
            name=tag,
            kernel=Path(kernel),
            initrd=Path(initrd),
            vhost_socket=Path(self.vhost_socket(env, role)),
            qmp_socket=Path(bed.socket_path(role, f"{tag}-qmp.sock")),
            console_socket=Path(bed.socket_path(role, f"{tag}-console.sock")),
            accel=env.accel,
            cpu=env.cpu,
            mem_mb=env.options.guest_mem_mb,
            smp=self.vcpus(env),
            mem_path=Path(bed.hugedir(role)) if env.options.guest_memory == "hugetlbfs" else None,
            queues=self.queues,
            vectors=self.vectors(env),
            packed=self.packed,
            incoming=(f"tcp:{bed.migration_ip(role)}:{bed.migration_port}" if incoming else None),
            defer_incoming=incoming and bool(self.capabilities.get("multifd")),
            binary=bed.tools(role).qemu,
            disk=Path(disk) if (disk := bed.guest_disk()) else None,
        )
        return QemuVm(spec, env.rundir, bed.node(role))

    def _incoming(self, env: LabEnv, stack: ExitStack, role: str, leg: int, vitals: Vitals) -> Side:
        vm = self._vm(env, role, leg, incoming=True)
        stack.callback(vm.stop)
        sock = self.vhost_socket(env, role)
        try:
            vm.start()
        except SetupError as exc:
            if not vm.node.exists(sock):
                raise StepFailed(
                    f"no vhost-user backend on the {role}: QEMU could not connect to {sock} ({exc})"
                ) from exc
            raise
        vitals.watch(f"the {role} QEMU {vm.spec.name}", vm.process, role)
        private_sockets(env, role)
        return Side(role, vm, GuestShell(vm.console))

    def _body(self, env: LabEnv, runner: StepRunner, stack: ExitStack, result: CaseResult) -> None:
        opts = env.options
        result.options = {
            "probes": opts.probes,
            "pps": opts.rate,
            "guest_mem_mb": opts.guest_mem_mb,
            "guest_smp": self.vcpus(env),
            "queues": self.queues,
            "vectors": self.vectors(env),
            "packed": self.packed,
            "cpu": env.cpu,
            "switch_learning": opts.switch_learning,
            "migrations": self.legs(env),
            "guest_memory": opts.guest_memory,
        }

        vitals = Vitals()
        runner.explain = vitals.explain
        with runner.step("host_testpmd", "prerequisite 2"):
            host_pmd = self._testpmd(env, "host")
            stack.callback(host_pmd.stop)
            host_pmd.start(low_priority_polling=True)
            vitals.watch("the host testpmd", host_pmd.process, "host")
            if not self.late_start:
                host_pmd.cmd("start")

        with runner.step("host_vm", "prerequisite 3") as step:
            src_vm = self._vm(env, "host", 0, incoming=False)
            stack.callback(src_vm.stop)
            t0 = time.monotonic()
            src_vm.start()
            vitals.watch(f"the host QEMU {src_vm.spec.name}", src_vm.process, "host")
            private_sockets(env, "host")
            src = Side("host", src_vm, GuestShell(src_vm.console))
            src_vm.console.output.expect(
                READY_MARKER, opts.boot_timeout_s, alive=src_vm.process.alive
            )
            src.shell.wait_prompt(30)
            step.figures["boot_s"] = round(time.monotonic() - t0, 2)

        with runner.step("backup_testpmd", "prerequisite 4") as step:
            if opts.backup_backend:
                backup_pmd = self._testpmd(env, "backup")
                stack.callback(backup_pmd.stop)
                backup_pmd.start(low_priority_polling=True)
                vitals.watch("the backup testpmd", backup_pmd.process, "backup")
                backup_pmd.cmd("start")
            else:
                step.verdict = "skip"
                step.detail = "no vhost testpmd started on the backup (--no-backup-backend)"

        with runner.step("backup_vm", "prerequisite 5"):
            dst = self._incoming(env, stack, "backup", 0, vitals)

        receiver = self.receiver(opts.probes)
        mark = host_pmd.process.output.mark() if self.reconnects else 0
        with runner.step(self.driver_step, "step 7") as step:
            receiver.start(src.shell)
            if self.late_start:
                host_pmd.cmd("start")
                receiver.commands.append("(host testpmd) start")
            step.detail = " && ".join(receiver.commands)[-300:]

        with runner.step("vhost_connected", "step 8") as step:
            try:
                step.detail = host_pmd.wait_vhost_ready(30, since=mark).strip()
            except ExpectTimeout as exc:
                raise StepFailed(
                    f"host vhost PMD never reported the guest's virtio device ready: {exc}"
                ) from exc

        traffic = Traffic(self.name, env, stack)
        traffic.start()
        vitals.watch_tester(traffic.tester)

        with runner.step("guest_receives", "step 9") as step:
            got = receiver.wait_count(src.shell, 1, 30)
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
            else:
                src.vm.console.output.expect(VERBOSE_RX_RE, 10)
                step.detail = f"port 0/queue 0: received ... (guest rx counter {got})"

        if self.dirty_mb_s:
            with runner.step("guest_dirty_load") as step:
                step.detail = start_dirty_load(src.shell, self.dirty_mb_s)

        sides = [src, dst]
        migration = Migration(self, env, runner, receiver, traffic, result, vitals)
        try:
            for leg in range(self.legs(env)):
                a, b = sides[leg % 2], sides[(leg + 1) % 2]
                if leg:
                    with runner.step("incoming_vm" + leg_suffix(leg)):
                        b = self._incoming(env, stack, b.role, leg, vitals)
                        sides[(leg + 1) % 2] = b
                migration.leg(leg, a, b)
                if self.variant == "plain":
                    vitals.retire(a.vm.process)
                    a.vm.stop()  # the source ends in postmigrate: its job is done
        except (CaseAborted, CaseSkipped):
            vitals.retire_tester()
            result.measure = traffic.finish(migration.figures)  # the figures of a failure
            result.traffic.sent = traffic.sent()
            raise

        vitals.retire_tester()  # the traffic ends here on purpose
        result.measure = traffic.finish(migration.figures)
        result.traffic.sent = traffic.sent()
        if opts.max_outage_ms is not None or opts.max_loss is not None:
            with runner.step("within_limits") as step:
                step.detail = check_limits(result.measure, opts.max_outage_ms, opts.max_loss)


def private_sockets(env: LabEnv, role: str) -> None:
    """Sockets 0600: on the role's node, and here (forwards of an SSH node's sockets)."""
    env.bed.node(role).secure_sockets(env.bed.workdir(role))
    if env.bed.kind != "lab":
        secure_sockets(env.rundir.sockets)


def start_dirty_load(shell: GuestShell, mb_s: int) -> str:
    """Rewrite a tmpfs file of `mb_s` MiB once a second in the background: guest memory
    dirtied at about `mb_s` MiB/s for as long as the guest runs."""
    cmd = (
        f"(while :; do dd if=/dev/zero of=/dev/shm/dirty bs=1M count={mb_s} conv=notrunc "
        "2>/dev/null; usleep 1000000; done) &"
    )
    shell.run("mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm 2>/dev/null; true")
    shell.run(cmd)
    return cmd
