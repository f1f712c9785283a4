"""One live migration of a case (a "leg"), as steps: start it, watch it, end it as its kind says.

Every leg starts the same (`migration_active`, queue changes where the case has them,
`receives_during_migration`); its kind (`plans.kinds`) names the steps that end it, and
`LegRun` implements them. A migration that failed or was cancelled leaves the guest on the
source, which must then keep receiving.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhostlm.apps.console import GuestShell
from vhostlm.apps.guest import KernelReceiver, Receiver, guest_crash
from vhostlm.apps.qemu import END_STATES, MigrationStatus, QemuVm
from vhostlm.apps.tls import MigrationTls, make_credentials
from vhostlm.backends.base import VhostBackend
from vhostlm.errors import SetupError, StepFailed
from vhostlm.integrity.ramdiff import RamDiff, RamSide, compare
from vhostlm.nodes.clock import NodeClock
from vhostlm.plans.env import LabEnv
from vhostlm.plans.faults import Vitals
from vhostlm.plans.kinds import SOURCE_KEEPS_RECEIVING
from vhostlm.plans.restart import BackendRestart, after_window
from vhostlm.plans.spec import CaseSpec, Restart
from vhostlm.plans.steps import CaseAborted, CaseSkipped, StepDef, StepRunner, leg_suffix
from vhostlm.plans.traffic import Traffic, event_time
from vhostlm.report.figures import mib
from vhostlm.report.results import CaseResult, MigrationFigures, StepResult
from vhostlm.wait import Deadline

Status = MigrationStatus


@dataclass
class Side:
    """One end of a migration: its role, its QEMU and the shell on its console."""

    role: str
    vm: QemuVm
    shell: GuestShell


def final_figures(vm: QemuVm) -> MigrationFigures:
    """query-migrate once QEMU has filled in total-time (set just after the event); what
    it says after 5 s if it never does."""
    settled = (Status.ACTIVE, Status.CANCELLED, Status.FAILED)
    deadline = Deadline(5)
    while True:
        info = vm.migration()
        if info.total_time_ms is not None or info.status in settled or deadline.expired():
            return MigrationFigures.from_query_migrate(info.raw)
        vm.pull_events(0.05)  # waits on QMP's socket, not a sleep


def figures_line(fig: MigrationFigures) -> str:
    """The figures a person reads first."""
    return (
        f"total {fig.total_time_ms} ms, downtime {fig.downtime_ms} ms, "
        f"{mib(fig.ram_transferred_bytes):.0f} MiB sent, "
        f"{fig.dirty_sync_count} dirty-sync rounds"
    )


# What the destination QEMU prints when a vhost-user backend has already faulted in a guest
# page that postcopy then tries to place (EEXIST): postcopy with vhost-user cannot work
# there. QEMU 7.2 says the first, QEMU 10 the second.
POSTCOPY_EEXIST = re.compile(
    r"postcopy_place_page: File exists|uffd_copy_page\(\) failed: .*errno=17"
)


def postcopy_paused(dst: QemuVm) -> None:
    """The migration stopped in postcopy-paused: fail with the destination's words."""
    out = dst.process.output
    out.wait_for(lambda t: bool(POSTCOPY_EEXIST.search(t)) or "Migration paused" in t, 10)
    log = out.text()
    if known := POSTCOPY_EEXIST.search(log):
        raise StepFailed(
            "postcopy paused: the destination QEMU could not place a page that was already "
            f"present ('{known.group(0)}'): something pre-faulted the guest's memory on the "
            "destination (a vhost backend that locks its memory: testpmd needs --no-mlockall)"
        )
    lines = log.strip().splitlines()
    raise StepFailed(f"postcopy paused: {lines[-1] if lines else 'destination said nothing'}")


def tls_root(env: LabEnv) -> Path:
    """Where the run's --migration-tls credentials live (one set for all its cases)."""
    return env.rundir.runtime / "tls"


def tls_server_ips(env: LabEnv) -> list[str]:
    """The addresses a migration's destination listens on: the server certificate's."""
    return [env.bed.migration_ip(role) for role in ("backup", "host")]


def prepare_tls(env: LabEnv) -> None:
    """Make the run's credentials now, before a case's guest and probes start (a no-op once
    made): made at the first `migrate`, openssl's three RSA keys took 1-2 s of CPU on a
    2-core testbed while the probes ran, and the host's testpmd, its lcores at nice 19,
    forwarded in bursts 100-250 ms apart and dropped replies (CI, stop 22). A failure
    here is left to the migration step, which makes them again and fails naming it."""
    if env.options.migration_tls:
        with contextlib.suppress(SetupError):
            make_credentials(tls_root(env), tls_server_ips(env), env.rundir)


class Migration:
    """What the legs of one case share: the case, its receiver and traffic, QEMU's figures."""

    def __init__(
        self,
        spec: CaseSpec,
        env: LabEnv,
        runner: StepRunner,
        receiver: Receiver,
        traffic: Traffic,
        result: CaseResult,
        vitals: Vitals | None = None,
        backends: dict[str, VhostBackend] | None = None,
    ) -> None:
        self.spec = spec
        self.env = env
        self.runner = runner
        self.receiver = receiver
        self.traffic = traffic
        self.result = result
        self.vitals = vitals or Vitals()
        self.backends = backends if backends is not None else {}  # by role, as they start
        self.tls: MigrationTls | None = None
        if env.options.migration_tls:
            bed = env.bed
            self.tls = MigrationTls(
                tls_root(env), tls_server_ips(env), env.rundir,
                lambda vm, local: bed.stage_dir(vm.node.name, local),
            )  # fmt: skip
        self.figures: list[MigrationFigures] = []
        self.ram_diffs: list[RamDiff] = []  # --verify-ram: one per switch-over

    def record(self, leg: int, figs: MigrationFigures) -> None:
        """Keep QEMU's figures of leg `leg` (the first leg's are the case's `migration`)."""
        self.figures.append(figs)
        if leg == 0:
            self.result.migration = figs

    def leg(self, leg: int, a: Side, b: Side) -> None:
        """Migrate from side `a` to side `b`, step by step, as the case's kind says."""
        run = LegRun(self, leg, a, b)
        try:
            for d in leg_defs(self.spec, self.env):
                with self.runner.step(d.name + run.sfx, d.seed) as step:
                    d.run(run, step)
        except CaseAborted as exc:
            if run.survivable:  # the migration failed or was cancelled: the source goes on
                self.result.reason = self.result.reason or str(exc)
                self.vitals.retire(b.vm.process)  # the destination ends with the migration
                run.after = "after the failed migration"
                with self.runner.step(SOURCE_KEEPS_RECEIVING.name + run.sfx) as step:
                    run.source_receives(step)
            raise


def _queues(spec: CaseSpec, _options: Any) -> bool:
    return spec.changes_queues


def leg_step_names(spec: CaseSpec, env: LabEnv, leg: int) -> list[str]:
    """The planned step names of migration number `leg` (0-based)."""
    return [d.name + leg_suffix(leg) for d in leg_defs(spec, env)]


def leg_defs(spec: CaseSpec, env: LabEnv) -> list[StepDef[LegRun]]:
    """The steps of one leg of `spec`, in order: the common start, then the kind's end."""
    defs: list[StepDef[Any]] = [*LEG_START, *spec.kind.end_steps(), *LEG_END]
    return [d for d in defs if d.when(spec, env.options)]


class LegRun:
    """The state of one leg while it runs; implements the operations kinds name (LegOps)."""

    def __init__(self, mig: Migration, leg: int, a: Side, b: Side) -> None:
        self.mig = mig
        self.leg = leg
        self.a, self.b = a, b
        self.sfx = leg_suffix(leg)
        self.marks = mig.traffic.new_leg(b.role)
        self.ev_a = self.ev_b = 0
        self.started = 0.0
        self.before = self.at_switch = 0
        self.survivable = False
        self.after = "after the cancel"
        self.ready_since = 0  # the destination backend's output at `migrate`

    # -- the common start ------------------------------------------------------------------

    def configure(self) -> None:
        """Capabilities on both ends and parameters on the source; skip what QEMU lacks."""
        mig, a, b = self.mig, self.a, self.b
        spec, opts = mig.spec, mig.env.options
        caps = {"events": True, **spec.capabilities, **spec.kind.capabilities}
        params: dict[str, Any] = {**spec.kind.parameters, **spec.parameters}
        if opts.downtime_limit_ms is not None:
            params["downtime-limit"] = opts.downtime_limit_ms
        if opts.max_bandwidth_mbps is not None:
            params["max-bandwidth"] = int(opts.max_bandwidth_mbps * 1e6 / 8)
        both = {k: v for k, v in params.items() if k.startswith("multifd")}
        if mig.tls is not None:
            params.update(mig.tls.source_parameters(a.vm, mig.env.bed.migration_ip(b.role)))
            both.update(mig.tls.destination_parameters(b.vm))
        for vm, mine in ((a.vm, params), (b.vm, both)):
            listed = [{"capability": k, "state": v} for k, v in caps.items()]
            try:
                vm.qmp("migrate-set-capabilities", capabilities=listed)
                if mine:
                    vm.qmp("migrate-set-parameters", **mine)
            except SetupError as exc:
                raise CaseSkipped(f"this QEMU refuses {caps} / {mine}: {exc}") from exc
        if b.vm.spec.defer_incoming:  # started with `-incoming defer`: listen now
            b.vm.qmp("migrate-incoming", uri=b.vm.spec.incoming)
        got = a.vm.qmp("query-migrate-parameters")
        keys = ["downtime-limit", "max-bandwidth", "multifd-channels"]
        options = mig.result.options
        if mig.tls is not None:
            keys += ["tls-creds", "tls-hostname"]
            options["migration_tls"] = {
                "source": {k: got.get(k) for k in ("tls-creds", "tls-hostname")},
                "destination": {"tls-creds": b.vm.qmp("query-migrate-parameters").get("tls-creds")},
                "verify_peer": True,
            }
        options["migration_parameters"] = {k: got.get(k) for k in keys}
        options["migration_capabilities"] = caps

    def active(self, step: StepResult) -> None:
        """Step 10: `migrate`; the MIGRATION event says active."""
        a, b, rx = self.a, self.b, self.mig.receiver
        self.configure()
        self.before = rx.count(a.shell)
        if self.leg == 0:
            self.mig.result.traffic.received_before = self.before
        self.ev_a, self.ev_b = a.vm.event_mark(), b.vm.event_mark()
        bed = self.mig.env.bed
        uri = f"tcp:{bed.migration_ip(b.role)}:{bed.migration_port}"
        backend = self.mig.backends.get(b.role)
        self.ready_since = backend.mark() if backend is not None else 0
        self.marks["migrate"] = time.time()
        self.started = time.monotonic()
        a.vm.qmp("migrate", uri=uri)
        status, _ = a.vm.wait_migration(self.ev_a, {Status.ACTIVE, *END_STATES}, 30)
        if status is not Status.ACTIVE:
            raise StepFailed(f"migration is {status}, not active: {a.vm.migration().why}")
        step.detail = f"migrate -d {uri}: active ({a.role} -> {b.role})"

    def queues(self, step: StepResult) -> None:
        """Change the guest's queue pairs while the migration is active, as DTS does."""
        rx, spec = self.mig.receiver, self.mig.spec
        assert isinstance(rx, KernelReceiver)
        done = []
        for queues in (1, spec.queues):  # a real change each time
            try:
                done.append(rx.set_queues(self.a.shell, queues, moving_to=self.b.shell))
            except SetupError as exc:
                raise StepFailed(f"while the migration was active: {exc}") from exc
        status = self.a.vm.migration().status
        step.detail = f"{' && '.join(done)}: no error (migration {status})"

    def receives_during(self, step: StepResult) -> None:
        """Step 11: the guest's counter rises while the migration is active."""
        rx = self.mig.receiver
        try:
            got = rx.wait_count(self.a.shell, self.before + 1, 30)
        except SetupError:
            got = None  # the source stopped (switch-over) before it answered
        status = self.a.vm.migration().status
        if got is None:
            raise StepFailed(
                f"the guest received nothing while the migration was active (now {status})"
            )
        step.detail = f"guest rx counter {self.before} -> {got} while migration was active"

    # -- the kinds' endings ----------------------------------------------------------------

    def postcopy_started(self, step: StepResult) -> None:
        """migrate-start-postcopy; postcopy-active (or already completed)."""
        a = self.a
        a.vm.qmp("migrate-start-postcopy")
        status, _ = a.vm.wait_migration(self.ev_a, {Status.POSTCOPY_ACTIVE, *END_STATES}, 30)
        if status not in (Status.POSTCOPY_ACTIVE, Status.COMPLETED):
            raise StepFailed(f"postcopy did not start: {a.vm.migration().why}")
        step.detail = f"migrate-start-postcopy: {status}"

    def completed(self, step: StepResult) -> None:
        """Step 12: completed within --migration-timeout; RESUME on the destination."""
        mig, a, b = self.mig, self.a, self.b
        ends = {*END_STATES, Status.POSTCOPY_PAUSED} if mig.spec.kind.postcopy else END_STATES
        timeout = mig.env.options.migration_timeout_s - (time.monotonic() - self.started)
        ended = self._wait_end(frozenset(ends), Deadline(timeout))
        if ended is None:
            self.survivable = True
            dead = mig.vitals.casualties(b.role)
            if dead:  # no backend on the destination: do not wait for the timeout
                figures = self._cancelled()
                raise StepFailed(
                    f"{'; '.join(dead)} before the switch-over to the {b.role}; "
                    f"migration cancelled ({figures}), the guest stays on the {a.role}"
                )
            raise StepFailed(self._timed_out()) from None
        mig.result.phases[f"migration{self.sfx}_s"] = round(time.monotonic() - self.started, 3)
        if ended is Status.POSTCOPY_PAUSED:
            postcopy_paused(b.vm)
        if ended is not Status.COMPLETED:
            self.survivable = True
            why = a.vm.migration().why
            mig.record(self.leg, final_figures(a.vm))
            mig.traffic.qmp_marks(self.marks, a.vm.events[self.ev_a :], self._clock(a))
            raise StepFailed(f"migration failed: {why}")
        mig.vitals.check(b.role, f"before the switch-over to the {b.role}")
        if b.vm.spec.hold:
            self._verify_ram(a, b)
        resume = b.vm.wait_event("RESUME", 30, self.ev_b)
        self.marks["resume"] = self._clock(b).to_controller(event_time(resume))
        figs = final_figures(a.vm)
        mig.record(self.leg, figs)
        mig.traffic.qmp_marks(self.marks, a.vm.events[self.ev_a :], self._clock(a))
        step.detail = f"Migration status: completed ({figures_line(figs)})"
        self.at_switch = mig.receiver.count(b.shell, 15)
        self._backend_ready()
        if self.leg == 0:
            mig.result.traffic.received_during = self.at_switch - self.before

    def _clock(self, side: Side) -> NodeClock:
        """The clock of the side's node: its QEMU's event times go through it."""
        return self.mig.env.bed.clocks.clock(side.role)

    def _backend_ready(self) -> None:
        """The destination backend's first "ready" line since `migrate` (the guest now
        answers there, so it has come): its arrival time is the leg's "ready" mark."""
        backend = self.mig.backends.get(self.b.role)
        found = backend.ready_at(self.ready_since, timeout=5) if backend is not None else None
        if found is not None:
            self.marks["ready"] = found[0]
            self.mig.traffic.ready_lines[self.leg] = found[1].strip()

    def _verify_ram(self, a: Side, b: Side) -> None:
        """The destination holds the guest paused: compare every page with the source's,
        then let it run (`cont`). A difference is recorded, not raised: the case goes on,
        so what the guest then does is seen too."""
        b.vm.wait_migration(self.ev_b, END_STATES, 30)
        bed, size = self.mig.env.bed, b.vm.spec.mem_mb << 20
        sides = [
            RamSide(s.vm.spec.name, s.vm.node, bed.tools(s.role).python, s.vm.process.pid, size)
            for s in (a, b)
        ]
        try:
            self.mig.ram_diffs.append(compare(*sides))
        finally:
            b.vm.qmp("cont")

    def receives_after(self, step: StepResult) -> None:
        """Step 13: the guest, now on the destination, keeps receiving."""
        mig, b, rx = self.mig, self.b, self.mig.receiver
        opts = mig.env.options
        got = rx.wait_count(b.shell, self.at_switch + opts.after_packets, opts.after_timeout_s)
        after = (got if got is not None else rx.count(b.shell)) - self.at_switch
        if self.leg == 0:
            mig.result.traffic.received_after = after
        if got is None:
            crash = guest_crash(b.vm.console.output.text())
            raise StepFailed(
                f"after migration the guest on the {b.role} received {after} packets in "
                f"{opts.after_timeout_s:.0f} s (wanted {opts.after_packets})"
                + (f"; its kernel crashed: {crash}" if crash else "")
            )
        mig.vitals.check_traffic()
        step.detail = f"the guest on the {b.role} received {after} more packets"

    def cancelled(self, step: StepResult) -> None:
        """migrate_cancel mid-way: cancelled, the destination stopped."""
        figs = self._cancel()
        self.mig.record(self.leg, figs)
        self._drop_destination()
        step.detail = f"migrate_cancel: cancelled ({figures_line(figs)})"

    def not_converged(self, step: StepResult) -> None:
        """Not ended within --converge-timeout: then cancelled with its figures."""
        mig, a = self.mig, self.a
        limit = mig.env.options.converge_timeout_s
        try:
            status, _ = a.vm.wait_migration(self.ev_a, END_STATES, limit)
        except SetupError:
            figs = self._cancel()
            mig.record(self.leg, figs)
            self._drop_destination()
            step.detail = f"did not converge within {limit:.0f} s ({figures_line(figs)}); cancelled"
            return
        raise StepFailed(
            f"migration {status} within {limit:.0f} s although the guest dirties "
            f"{mig.spec.dirty_mb_s} MiB/s: {figures_line(final_figures(a.vm))}"
        )

    def source_receives(self, step: StepResult) -> None:
        """The source guest still runs, receives and answers probes."""
        mig, a, rx = self.mig, self.a, self.mig.receiver
        opts = mig.env.options
        state = a.vm.qmp("query-status")
        if state.get("status") != "running":
            raise StepFailed(f"the source guest is {state.get('status')}, not running")
        now = rx.count(a.shell)
        got = rx.wait_count(a.shell, now + opts.after_packets, opts.after_timeout_s)
        if got is None:
            raise StepFailed(f"the source guest stopped receiving {self.after} (at {now})")
        if opts.probes:
            replies = mig.traffic.tester.progress()[1]
            if not mig.traffic.wait_replies(replies + opts.after_packets, opts.after_timeout_s):
                raise StepFailed(f"the source guest stopped answering probes {self.after}")
        mig.vitals.check_traffic()
        step.detail = f"source running; guest rx counter {now} -> {got}"

    def restart_destination(self, step: StepResult) -> None:
        """Reconnect case: the destination's backend restarted right after the switch-over
        (once its outage window closed); it must reconnect, the guest answer again."""
        mig = self.mig
        restart = BackendRestart(mig.backends, mig.vitals, mig.traffic, mig.receiver,
                                 mig.env.options)  # fmt: skip
        restart.past_switch_over(after_window(self.marks))
        restart.run(self.b.role, self.b.shell, step)

    # -- helpers ---------------------------------------------------------------------------

    def _drop_destination(self) -> None:
        """The leg ended with the guest on the source: the destination's QEMU goes."""
        self.mig.vitals.retire(self.b.vm.process)
        self.b.vm.stop()

    def _wait_end(self, ends: frozenset[MigrationStatus], deadline: Deadline) -> Status | None:
        """The migration's end status; None at `deadline` or as soon as a process the
        destination needs (its backend, its QEMU) has died: it can then never complete."""
        a, vitals = self.a, self.mig.vitals
        while True:
            left = deadline.left()
            try:
                return a.vm.wait_migration(self.ev_a, ends, min(left, 1.0))[0]
            except SetupError:
                if not a.vm.process.alive():
                    raise  # the source itself is gone: nothing to cancel
            if left <= 1.0:
                return None
            if vitals.casualties(self.b.role):
                try:  # a dead destination QEMU fails the migration by itself: let it say so
                    return a.vm.wait_migration(self.ev_a, ends, 3.0)[0]
                except SetupError:
                    return None

    def _cancelled(self) -> str:
        """Cancel the migration, keep its figures so far; the figures, in words."""
        self.mig.vitals.retire(self.b.vm.process)  # the destination ends with the cancel
        figs = self._cancel()
        self.mig.record(self.leg, figs)
        return f"{figures_line(figs)}, {figs.mbps:.1f} Mbit/s"

    def _timed_out(self) -> str:
        """--migration-timeout passed: keep the figures so far, cancel, say so."""
        limit = self.mig.env.options.migration_timeout_s
        figures = self._cancelled()
        return (
            f"migration did not complete within --migration-timeout {limit:g} s ({figures}); "
            f"cancelled, the guest stays on the {self.a.role}"
        )

    def _cancel(self) -> MigrationFigures:
        """migrate_cancel and wait until it is cancelled; QEMU's figures up to the cancel
        (query-migrate forgets them once the migration is cancelled)."""
        vm = self.a.vm
        figs = final_figures(vm)
        vm.qmp("migrate_cancel")
        status, event = vm.wait_migration(self.ev_a, END_STATES, 30)
        if status is not Status.CANCELLED:
            raise StepFailed(f"migrate_cancel: migration ended {status}, not cancelled")
        self.marks["cancelled"] = self._clock(self.a).to_controller(event_time(event))
        self.mig.traffic.qmp_marks(self.marks, vm.events[self.ev_a :], self._clock(self.a))
        figs.status = "cancelled"
        return figs


def _restarts_destination(spec: CaseSpec, _options: Any) -> bool:
    return spec.restart is Restart.DESTINATION and spec.kind.moves_guest


LEG_START: tuple[StepDef[LegRun], ...] = (
    StepDef("migration_active", LegRun.active, "step 10"),
    StepDef("guest_queues_during_migration", LegRun.queues, when=_queues),
    StepDef("receives_during_migration", LegRun.receives_during, "step 11"),
)
LEG_END: tuple[StepDef[LegRun], ...] = (
    StepDef("restart_destination_backend", LegRun.restart_destination, when=_restarts_destination),
)
