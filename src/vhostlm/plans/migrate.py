"""One live migration of a case (a "leg"), as steps: start, watch, and how it must end.

Plain legs must complete and the guest must keep receiving on the destination; cancel
legs are cancelled mid-way and the source must keep running; non-converging legs must
still be active when the time is up (then they are cancelled), never hang.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vhostlm.apps.guest import KernelReceiver, Receiver, guest_crash
from vhostlm.apps.qemu import QemuVm
from vhostlm.apps.tls import MigrationTls
from vhostlm.errors import SetupError, StepFailed
from vhostlm.plans.env import LabEnv
from vhostlm.plans.faults import Vitals
from vhostlm.plans.steps import CaseAborted, CaseSkipped, StepRunner, leg_suffix
from vhostlm.plans.traffic import Traffic, event_time
from vhostlm.report.results import CaseResult, MigrationFigures

if TYPE_CHECKING:
    from vhostlm.plans.migration import MigrationCase, Side

END_STATES = ("completed", "failed", "cancelled")


def wait_migration(
    vm: QemuVm, since: int, states: tuple[str, ...], timeout: float
) -> dict[str, Any]:
    """The first MIGRATION event (after index `since`) whose status is in `states`."""
    return vm.wait_event("MIGRATION", timeout, since, match=lambda d: d.get("status") in states)


def final_figures(vm: QemuVm) -> MigrationFigures:
    """query-migrate once QEMU has filled in total-time (set just after the event)."""
    deadline = time.monotonic() + 5
    while True:
        info = vm.qmp("query-migrate")
        if "total-time" in info or info.get("status") in ("active", "cancelled", "failed"):
            return MigrationFigures.from_query_migrate(info)
        if time.monotonic() > deadline:
            return MigrationFigures.from_query_migrate(info)
        vm.pull_events(0.05)


def figures_line(fig: MigrationFigures) -> str:
    """The figures a person reads first."""
    return (
        f"total {fig.total_time_ms} ms, downtime {fig.downtime_ms} ms, "
        f"{fig.ram_transferred_bytes / 2**20:.0f} MiB sent, "
        f"{fig.dirty_sync_count} dirty-sync rounds"
    )


# What the destination QEMU prints when a vhost-user backend has already faulted in a guest
# page that postcopy then tries to place (EEXIST): postcopy with vhost-user cannot work
# there. QEMU 7.2 says the first, QEMU 10 the second.
POSTCOPY_EEXIST = re.compile(
    r"postcopy_place_page: File exists|uffd_copy_page\(\) failed: .*errno=17"
)


def postcopy_paused(dst: QemuVm) -> None:
    """The migration stopped in postcopy-paused: skip on the known incompatibility, else fail."""
    out = dst.process.output
    out.wait_for(lambda t: bool(POSTCOPY_EEXIST.search(t)) or "Migration paused" in t, 10)
    log = out.text()
    if known := POSTCOPY_EEXIST.search(log):
        raise CaseSkipped(
            "postcopy with a vhost-user backend does not work with this QEMU and DPDK: the "
            f"destination QEMU could not place a page the backend had already touched "
            f"('{known.group(0)}'; the guest is lost in postcopy-paused)"
        )
    lines = log.strip().splitlines()
    raise StepFailed(f"postcopy paused: {lines[-1] if lines else 'destination said nothing'}")


def error_desc(vm: QemuVm) -> str:
    """Why QEMU says the migration failed."""
    info = vm.qmp("query-migrate")
    return str(info.get("error-desc", info.get("status", "unknown")))


class Migration:
    """Runs the legs of one case and keeps each leg's QEMU figures."""

    def __init__(
        self,
        case: MigrationCase,
        env: LabEnv,
        runner: StepRunner,
        receiver: Receiver,
        traffic: Traffic,
        result: CaseResult,
        vitals: Vitals | None = None,
    ) -> None:
        self.case = case
        self.env = env
        self.runner = runner
        self.receiver = receiver
        self.traffic = traffic
        self.result = result
        self.vitals = vitals or Vitals()
        self.tls: MigrationTls | None = None
        if env.options.migration_tls:
            ips = [env.bed.migration_ip(role) for role in ("backup", "host")]
            stage = None if env.bed.kind == "lab" else self._stage_tls
            self.tls = MigrationTls(env.rundir.runtime / "tls", ips, env.rundir, stage)
        self.figures: list[MigrationFigures] = []

    def _stage_tls(self, vm: QemuVm, local: Path) -> str:
        """Copy one endpoint's credentials to the QEMU's node (a private directory there)."""
        role = vm.node.name
        remote = f"{self.env.bed.workdir(role)}/tls-{local.name}"
        vm.node.run(["mkdir", "-p", "-m", "0700", remote])
        for path in sorted(local.iterdir()):
            vm.node.put(path, f"{remote}/{path.name}")
        vm.node.run(["chmod", "-R", "go-rwx", remote])
        return remote

    def configure(self, a: Side, b: Side) -> None:
        """Capabilities on both ends and parameters on the source; skip what QEMU lacks."""
        case, opts = self.case, self.env.options
        caps = {"events": True, **case.capabilities}
        if case.postcopy:
            caps["postcopy-ram"] = True
        params: dict[str, Any] = dict(case.parameters)
        if opts.downtime_limit_ms is not None:
            params["downtime-limit"] = opts.downtime_limit_ms
        if opts.max_bandwidth_mbps is not None:
            params["max-bandwidth"] = int(opts.max_bandwidth_mbps * 1e6 / 8)
        both = {k: v for k, v in params.items() if k.startswith("multifd")}
        if self.tls is not None:
            params.update(self.tls.source_parameters(a.vm, self.env.bed.migration_ip(b.role)))
            both.update(self.tls.destination_parameters(b.vm))
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
        if self.tls is not None:
            keys += ["tls-creds", "tls-hostname"]
            self.result.options["migration_tls"] = {
                "source": {k: got.get(k) for k in ("tls-creds", "tls-hostname")},
                "destination": {"tls-creds": b.vm.qmp("query-migrate-parameters").get("tls-creds")},
                "verify_peer": True,
            }
        self.result.options["migration_parameters"] = {k: got.get(k) for k in keys}
        self.result.options["migration_capabilities"] = caps

    def leg(self, leg: int, a: Side, b: Side) -> MigrationFigures:
        """Migrate from side `a` to side `b` as the case's variant says."""
        case, opts, runner, rx = self.case, self.env.options, self.runner, self.receiver
        sfx = leg_suffix(leg)
        marks = self.traffic.new_leg(b.role)
        with runner.step("migration_active" + sfx, "step 10") as step:
            self.configure(a, b)
            before = rx.count(a.shell)
            if leg == 0:
                self.result.traffic.received_before = before
            ev_a, ev_b = a.vm.event_mark(), b.vm.event_mark()
            bed = self.env.bed
            uri = f"tcp:{bed.migration_ip(b.role)}:{bed.migration_port}"
            marks["migrate"] = time.time()
            started = time.monotonic()
            a.vm.qmp("migrate", uri=uri)
            event = wait_migration(a.vm, ev_a, ("active", *END_STATES), 30)
            if event["data"]["status"] != "active":
                raise StepFailed(
                    f"migration is {event['data']['status']}, not active: {error_desc(a.vm)}"
                )
            step.detail = f"migrate -d {uri}: active ({a.role} -> {b.role})"

        if case.queues > 1 and isinstance(rx, KernelReceiver):
            with runner.step("guest_queues_during_migration" + sfx) as step:
                done = []
                for queues in (1, case.queues):  # a real change each time, as DTS does
                    try:
                        done.append(rx.set_queues(a.shell, queues, moving_to=b.shell))
                    except SetupError as exc:
                        raise StepFailed(f"while the migration was active: {exc}") from exc
                status = a.vm.qmp("query-migrate").get("status")
                step.detail = f"{' && '.join(done)}: no error (migration {status})"

        with runner.step("receives_during_migration" + sfx, "step 11") as step:
            try:
                got = rx.wait_count(a.shell, before + 1, 30)
            except SetupError:
                got = None  # the source stopped (switch-over) before it answered
            status = str(a.vm.qmp("query-migrate").get("status"))
            if got is None:
                raise StepFailed(
                    f"the guest received nothing while the migration was active (now {status})"
                )
            step.detail = f"guest rx counter {before} -> {got} while migration was active"

        if case.postcopy:
            with runner.step("postcopy_active" + sfx) as step:
                a.vm.qmp("migrate-start-postcopy")
                event = wait_migration(a.vm, ev_a, ("postcopy-active", *END_STATES), 30)
                if event["data"]["status"] not in ("postcopy-active", "completed"):
                    raise StepFailed(f"postcopy did not start: {error_desc(a.vm)}")
                step.detail = f"migrate-start-postcopy: {event['data']['status']}"

        if case.variant in ("cancel", "no_converge"):
            return self._stopped_leg(leg, a, b, ev_a, marks)

        survivable = False  # the migration failed or was cancelled: the source must go on
        try:
            with runner.step("migration_completed" + sfx, "step 12") as step:
                ends = (*END_STATES, "postcopy-paused") if case.postcopy else END_STATES
                deadline = started + opts.migration_timeout_s
                ended = self._wait_end(a, b, ev_a, ends, deadline)
                if ended is None:
                    survivable = True
                    dead = self.vitals.casualties(b.role)
                    if dead:  # no backend on the destination: do not wait for the timeout
                        figures = self._cancelled(leg, a, b, ev_a, marks)
                        raise StepFailed(
                            f"{'; '.join(dead)} before the switch-over to the {b.role}; "
                            f"migration cancelled ({figures}), the guest stays on the {a.role}"
                        )
                    raise StepFailed(self._timed_out(leg, a, b, ev_a, marks)) from None
                event = ended
                self.result.phases[f"migration{sfx}_s"] = round(time.monotonic() - started, 3)
                if event["data"]["status"] == "postcopy-paused":
                    postcopy_paused(b.vm)
                if event["data"]["status"] != "completed":
                    survivable = True
                    why = error_desc(a.vm)
                    self._record(leg, final_figures(a.vm))
                    self.traffic.qmp_marks(marks, a.vm.events[ev_a:])
                    raise StepFailed(f"migration failed: {why}")
                self.vitals.check(b.role, f"before the switch-over to the {b.role}")
                resume = b.vm.wait_event("RESUME", 30, ev_b)
                marks["resume"] = event_time(resume)
                figs = final_figures(a.vm)
                self._record(leg, figs)
                self.traffic.qmp_marks(marks, a.vm.events[ev_a:])
                step.detail = f"Migration status: completed ({figures_line(figs)})"
                at_switch = rx.count(b.shell, 15)
                if leg == 0:
                    self.result.traffic.received_during = at_switch - before
        except CaseAborted as exc:
            if survivable:
                self.result.reason = self.result.reason or str(exc)
                self.vitals.retire(b.vm.process)  # the destination ends with the migration
                self._source_keeps_receiving(leg, a, "after the failed migration")
            raise

        with runner.step("receives_after_migration" + sfx, "step 13") as step:
            got = rx.wait_count(b.shell, at_switch + opts.after_packets, opts.after_timeout_s)
            after = (got if got is not None else rx.count(b.shell)) - at_switch
            if leg == 0:
                self.result.traffic.received_after = after
            if got is None:
                crash = guest_crash(b.vm.console.output.text())
                raise StepFailed(
                    f"after migration the guest on the {b.role} received {after} packets in "
                    f"{opts.after_timeout_s:.0f} s (wanted {opts.after_packets})"
                    + (f"; its kernel crashed: {crash}" if crash else "")
                )
            self.vitals.check_traffic()
            step.detail = f"the guest on the {b.role} received {after} more packets"
        return figs

    def _record(self, leg: int, figs: MigrationFigures) -> None:
        """Keep QEMU's figures of leg `leg` (the first leg's are the case's `migration`)."""
        self.figures.append(figs)
        if leg == 0:
            self.result.migration = figs

    def _wait_end(
        self, a: Side, b: Side, since: int, ends: tuple[str, ...], deadline: float
    ) -> dict[str, Any] | None:
        """The migration's end event; None at `deadline` or as soon as a process the
        destination needs (its testpmd, its QEMU) has died: it can then never complete."""
        while True:
            left = deadline - time.monotonic()
            try:
                return wait_migration(a.vm, since, ends, max(0.0, min(left, 1.0)))
            except SetupError:
                if not a.vm.process.alive():
                    raise  # the source itself is gone: nothing to cancel
            if left <= 1.0:
                return None
            if self.vitals.casualties(b.role):
                try:  # a dead destination QEMU fails the migration by itself: let it say so
                    return wait_migration(a.vm, since, ends, 3.0)
                except SetupError:
                    return None

    def _cancelled(self, leg: int, a: Side, b: Side, since: int, marks: dict[str, float]) -> str:
        """Cancel the migration, keep its figures so far; the figures, in words."""
        self.vitals.retire(b.vm.process)  # the destination ends with the cancel
        figs = self._cancel(a.vm, since, marks)
        self._record(leg, figs)
        return f"{figures_line(figs)}, {figs.mbps:.1f} Mbit/s"

    def _timed_out(self, leg: int, a: Side, b: Side, since: int, marks: dict[str, float]) -> str:
        """--migration-timeout passed: keep the figures so far, cancel, say so."""
        limit = self.env.options.migration_timeout_s
        figures = self._cancelled(leg, a, b, since, marks)
        return (
            f"migration did not complete within --migration-timeout {limit:g} s ({figures}); "
            f"cancelled, the guest stays on the {a.role}"
        )

    def _source_keeps_receiving(self, leg: int, a: Side, after: str) -> None:
        """Step: the source guest still runs, receives and answers probes `after` ..."""
        opts, rx = self.env.options, self.receiver
        with self.runner.step("source_keeps_receiving" + leg_suffix(leg)) as step:
            state = a.vm.qmp("query-status")
            if state.get("status") != "running":
                raise StepFailed(f"the source guest is {state.get('status')}, not running")
            now = rx.count(a.shell)
            got = rx.wait_count(a.shell, now + opts.after_packets, opts.after_timeout_s)
            if got is None:
                raise StepFailed(f"the source guest stopped receiving {after} (at {now})")
            if opts.probes:
                replies = self.traffic.tester.progress()[1]
                if not self.traffic.wait_replies(
                    replies + opts.after_packets, opts.after_timeout_s
                ):
                    raise StepFailed(f"the source guest stopped answering probes {after}")
            self.vitals.check_traffic()
            step.detail = f"source running; guest rx counter {now} -> {got}"

    def _stopped_leg(
        self, leg: int, a: Side, b: Side, ev_a: int, marks: dict[str, float]
    ) -> MigrationFigures:
        """A leg that must not complete: cancelled on purpose, or unable to converge."""
        case, opts, runner = self.case, self.env.options, self.runner
        sfx = leg_suffix(leg)
        if case.variant == "cancel":
            with runner.step("migration_cancelled" + sfx) as step:
                figs = self._cancel(a.vm, ev_a, marks)
                step.detail = f"migrate_cancel: cancelled ({figures_line(figs)})"
        else:
            with runner.step("did_not_converge" + sfx) as step:
                limit = opts.converge_timeout_s
                try:
                    event = wait_migration(a.vm, ev_a, END_STATES, limit)
                except SetupError:
                    figs = self._cancel(a.vm, ev_a, marks)
                    step.detail = (
                        f"did not converge within {limit:.0f} s ({figures_line(figs)}); cancelled"
                    )
                else:
                    status = event["data"]["status"]
                    raise StepFailed(
                        f"migration {status} within {limit:.0f} s although the guest dirties "
                        f"{case.dirty_mb_s} MiB/s: {figures_line(final_figures(a.vm))}"
                    )
        self.vitals.retire(b.vm.process)
        self._source_keeps_receiving(leg, a, "after the cancel")
        b.vm.stop()
        self._record(leg, figs)
        return figs

    def _cancel(self, vm: QemuVm, since: int, marks: dict[str, float]) -> MigrationFigures:
        """migrate_cancel and wait until it is cancelled; QEMU's figures up to the cancel
        (query-migrate forgets them once the migration is cancelled)."""
        figs = final_figures(vm)
        vm.qmp("migrate_cancel")
        event = wait_migration(vm, since, END_STATES, 30)
        status = event["data"]["status"]
        if status != "cancelled":
            raise StepFailed(f"migrate_cancel: migration ended {status}, not cancelled")
        marks["cancelled"] = event_time(event)
        self.traffic.qmp_marks(marks, vm.events[since:])
        figs.status = "cancelled"
        return figs
