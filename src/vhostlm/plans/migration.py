"""The seed plan's flow, written once: prerequisites, receive, migrate, receive again.

A case subclasses `MigrationCase` and says how the guest receives (the `Receiver`);
everything else (testpmd with a vhost port on host and backup, the guest and its paused
twin with `-incoming`, tester traffic, the migration from QMP) is shared.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from vhostlm.apps.console import GuestShell
from vhostlm.apps.guest import Receiver
from vhostlm.apps.qemu import QemuVm, VmSpec
from vhostlm.apps.stream import ExpectTimeout
from vhostlm.apps.testpmd import VERBOSE_RX_RE, TestPmd, check_socket_free, testpmd_argv
from vhostlm.errors import SetupError, StepFailed
from vhostlm.plans.env import LabEnv
from vhostlm.plans.steps import CaseAborted, StepRunner
from vhostlm.plans.traffic import Traffic, check_limits
from vhostlm.report.results import CaseResult, MigrationFigures
from vhostlm.testbed.lab import MIG_PORT

READY_MARK = "VHOSTLM-GUEST-READY"
TESTPMD_BINARY = "dpdk-testpmd"
END_STATES = ("completed", "failed", "cancelled")
TESTPMD_MB = 128  # hugepage memory of each vhost testpmd
TESTPMD_MBUFS = 16384  # testpmd's default pool would take ~600 MiB of hugepages


def prerequisite_steps() -> list[str]:
    """Steps 2-5 of the seed's prerequisites, the same for every case."""
    return ["host_testpmd", "host_vm", "backup_testpmd", "backup_vm"]


class MigrationCase:
    """One case of the plan: a guest receiving tester traffic across a live migration."""

    name = ""
    driver_step = "guest_driver"
    reconnects = False  # True: the guest driver re-initialises the device (virtio-pmd)

    def receiver(self, probes: bool) -> Receiver:
        """The guest-side receiver of this case (answering probes when `probes`)."""
        raise NotImplementedError

    @classmethod
    def description(cls) -> str:
        """First line of the case's docstring, for `vhostlm list`."""
        return (cls.__doc__ or "").strip().splitlines()[0]

    def planned_steps(self) -> list[str]:
        """Every step of the case, in order, so unrun ones can be reported as skipped."""
        return [
            *prerequisite_steps(),
            self.driver_step,
            "vhost_connected",
            "guest_receives",
            "migration_active",
            "receives_during_migration",
            "migration_completed",
            "receives_after_migration",
        ]

    def run(self, env: LabEnv) -> CaseResult:
        """Run every step; whatever happens, stop what the case started."""
        result = CaseResult(name=self.name)
        runner = StepRunner(result, env.progress, self.planned_steps())
        start = time.monotonic()
        stopping = [0.0]
        if env.options.max_outage_ms is not None or env.options.max_loss is not None:
            runner.planned.append("within_limits")

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
        except CaseAborted:
            runner.skip_rest("not run: an earlier step did not pass")
        finally:
            result.duration_s = round(time.monotonic() - start, 3)
        result.finish()
        return result

    def _testpmd(self, env: LabEnv, role: str, sock: str) -> TestPmd:
        lab = env.lab
        check_socket_free(Path(sock))
        argv = testpmd_argv(
            TESTPMD_BINARY,
            "0-1",
            [f"net_vhost0,iface={sock},queues=1", f"net_af_packet0,iface={lab.port(role)}"],
            file_prefix=f"vhostlm-{env.rundir.run_id}-{self.name}-{role}",
            huge_dir=str(lab.hugedir),
            mem_mb=TESTPMD_MB,
            app_args=[f"--total-num-mbufs={TESTPMD_MBUFS}"],
        )
        return TestPmd(f"{self.name}-testpmd-{role}", argv, env.rundir, lab.ns(role))

    def _vm_spec(self, env: LabEnv, role: str, incoming: str | None) -> VmSpec:
        rd = env.rundir
        return VmSpec(
            name=f"{self.name}-{role}",
            kernel=env.image.kernel,
            initrd=env.image.initrd,
            vhost_socket=rd.socket_path(f"{self.name}-{role}-vhost.sock"),
            qmp_socket=rd.socket_path(f"{self.name}-{role}-qmp.sock"),
            console_socket=rd.socket_path(f"{self.name}-{role}-console.sock"),
            accel=env.accel,
            cpu=env.cpu,
            mem_mb=env.options.guest_mem_mb,
            smp=env.options.guest_smp,
            mem_path=env.lab.hugedir,
            incoming=incoming,
        )

    def _body(self, env: LabEnv, runner: StepRunner, stack: ExitStack, result: CaseResult) -> None:
        opts = env.options
        lab = env.lab
        result.options = {
            "probes": opts.probes,
            "pps": opts.rate,
            "guest_mem_mb": opts.guest_mem_mb,
            "guest_smp": opts.guest_smp,
            "cpu": env.cpu,
            "switch_learning": opts.switch_learning,
        }

        with runner.step("host_testpmd", "prerequisite 2"):
            host_sock = str(env.rundir.socket_path(f"{self.name}-host-vhost.sock"))
            host_pmd = self._testpmd(env, "host", host_sock)
            stack.callback(host_pmd.stop)
            host_pmd.start(idle_polling=True)
            host_pmd.cmd("start")

        with runner.step("host_vm", "prerequisite 3") as step:
            src = QemuVm(self._vm_spec(env, "host", None), env.rundir, lab.ns("host"))
            stack.callback(src.stop)
            t0 = time.monotonic()
            src.start()
            shell = GuestShell(src.console)
            src.console.output.expect(READY_MARK, opts.boot_timeout_s, alive=src.process.alive)
            shell.wait_prompt(30)
            step.figures["boot_s"] = round(time.monotonic() - t0, 2)

        with runner.step("backup_testpmd", "prerequisite 4") as step:
            bsock = env.rundir.socket_path(f"{self.name}-backup-vhost.sock")
            if opts.backup_backend:
                backup_pmd = self._testpmd(env, "backup", str(bsock))
                stack.callback(backup_pmd.stop)
                backup_pmd.start(idle_polling=True)
                backup_pmd.cmd("start")
            else:
                step.verdict = "skip"
                step.detail = "no vhost testpmd started on the backup (--no-backup-backend)"

        with runner.step("backup_vm", "prerequisite 5"):
            incoming = f"tcp:{lab.migration_ip('backup')}:{MIG_PORT}"
            dst = QemuVm(self._vm_spec(env, "backup", incoming), env.rundir, lab.ns("backup"))
            stack.callback(dst.stop)
            try:
                dst.start()
            except SetupError as exc:
                if not bsock.exists():
                    raise StepFailed(
                        "no vhost-user backend on the backup: QEMU could not connect to "
                        f"{bsock} ({exc})"
                    ) from exc
                raise
            dst_shell = GuestShell(dst.console)
            for vm in (src, dst):
                vm.qmp(
                    "migrate-set-capabilities",
                    capabilities=[{"capability": "events", "state": True}],
                )

        receiver = self.receiver(opts.probes)
        mark = host_pmd.process.output.mark() if self.reconnects else 0
        with runner.step(self.driver_step, "step 7") as step:
            receiver.start(shell)
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

        with runner.step("guest_receives", "step 9") as step:
            got = receiver.wait_count(shell, 1, 30)
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
                src.console.output.expect(VERBOSE_RX_RE, 10)
                step.detail = f"port 0/queue 0: received ... (guest rx counter {got})"

        with runner.step("migration_active", "step 10") as step:
            before = receiver.count(shell)
            result.traffic.received_before = before
            ev_src, ev_dst = src.event_mark(), dst.event_mark()
            uri = f"tcp:{lab.migration_ip('backup')}:{MIG_PORT}"
            traffic.marks["migrate"] = time.time()
            t_migrate = time.monotonic()
            src.qmp("migrate", uri=uri)
            event = self._wait_migration(src, ev_src, ("active", *END_STATES), 30)
            status = event["data"]["status"]
            if status != "active":
                raise StepFailed(f"migration is {status}, not active: {self._error_desc(src)}")
            step.detail = f"migrate -d {uri}: active"

        with runner.step("receives_during_migration", "step 11") as step:
            try:
                got = receiver.wait_count(shell, before + 1, 30)
            except SetupError:
                got = None  # the source stopped (switch-over) before it answered
            status = str(src.qmp("query-migrate").get("status"))
            if got is None:
                raise StepFailed(
                    f"the guest received nothing while the migration was active (now {status})"
                )
            step.detail = f"guest rx counter {before} -> {got} while migration was active"

        with runner.step("migration_completed", "step 12") as step:
            try:
                event = self._wait_migration(src, ev_src, END_STATES, opts.migration_timeout_s)
            except SetupError as exc:
                src.qmp("migrate_cancel")
                raise StepFailed(
                    f"migration did not complete within {opts.migration_timeout_s:.0f} s "
                    f"({self._figures_line(self._final_figures(src))})"
                ) from exc
            result.phases["migration_s"] = round(time.monotonic() - t_migrate, 3)
            if event["data"]["status"] != "completed":
                raise StepFailed(f"migration failed: {self._error_desc(src)}")
            resume = dst.wait_event("RESUME", 30, ev_dst)
            result.migration = self._final_figures(src)
            traffic.qmp_marks(src.events[ev_src:], resume)
            step.detail = f"Migration status: completed ({self._figures_line(result.migration)})"
            at_switch = receiver.count(dst_shell, 15)
            result.traffic.received_during = at_switch - before

        with runner.step("receives_after_migration", "step 13") as step:
            got = receiver.wait_count(
                dst_shell, at_switch + opts.after_packets, opts.after_timeout_s
            )
            after = (got if got is not None else receiver.count(dst_shell)) - at_switch
            result.traffic.received_after = after
            if got is None:
                raise StepFailed(
                    f"after migration the guest on the backup received {after} packets in "
                    f"{opts.after_timeout_s:.0f} s (wanted {opts.after_packets})"
                )
            step.detail = f"the guest on the backup received {after} more packets"

        result.measure = traffic.finish(result.migration)
        result.traffic.sent = traffic.sent()
        if opts.max_outage_ms is not None or opts.max_loss is not None:
            with runner.step("within_limits") as step:
                step.detail = check_limits(result.measure, opts.max_outage_ms, opts.max_loss)

    @staticmethod
    def _wait_migration(
        vm: QemuVm, since: int, states: tuple[str, ...], timeout: float
    ) -> dict[str, Any]:
        return vm.wait_event(
            "MIGRATION", timeout, since, match=lambda data: data.get("status") in states
        )

    @staticmethod
    def _error_desc(vm: QemuVm) -> str:
        info = vm.qmp("query-migrate")
        return str(info.get("error-desc", info.get("status", "unknown")))

    @staticmethod
    def _final_figures(vm: QemuVm) -> MigrationFigures:
        """query-migrate once QEMU has filled in total-time (set just after the event)."""
        deadline = time.monotonic() + 5
        while True:
            info = vm.qmp("query-migrate")
            if "total-time" in info or time.monotonic() > deadline:
                return MigrationFigures.from_query_migrate(info)
            vm.pull_events(0.05)

    @staticmethod
    def _figures_line(fig: MigrationFigures) -> str:
        return (
            f"total {fig.total_time_ms} ms, downtime {fig.downtime_ms} ms, "
            f"{fig.ram_transferred_bytes / 2**20:.0f} MiB sent"
        )
