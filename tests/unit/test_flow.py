"""The case flow with fake drivers: step order per case kind, failures, teardown on every path.

The fakes script what QEMU, the backend, the guest and the tester do; the flow under test
is the real one. Expected step lists are written out by hand from the seed and DTS plans.
"""

from __future__ import annotations

import io
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vhostlm.apps.console import GuestShell
from vhostlm.apps.qemu import MigrationStatus, VmSpec
from vhostlm.backends.base import BackendConfig, VhostBackend
from vhostlm.errors import SetupError
from vhostlm.guests.base import BootFiles, Driver, Guest
from vhostlm.nodes.stream import OutputStream
from vhostlm.plans.catalog import all_cases
from vhostlm.plans.env import LabEnv, RunOptions
from vhostlm.plans.flow import CaseFlow, Drivers, run_case
from vhostlm.report.progress import Progress
from vhostlm.report.results import CaseResult
from vhostlm.testbed.topology import Nic, Topology

PREREQ = ["host_testpmd", "host_vm", "backup_testpmd", "backup_vm", "guest_boots",
          "guest_memcheck"]  # fmt: skip
INTACT = "guest_intact"
SOUND = "outage_sound"
READY = "VHLMC ready pages=65536 mb=256 rate_mb_s=8 first_gpa=0x2000000\n"
SCAN = "VHLMC scan={n} pages=65536 bad={bad} written=900 gen=2 ms={n}000\n"
BAD = "VHLMC bad page=77 gpa=0x204d000 kind=stale seen_gen=1 expect_gen=2 offset=0\n"
LEG = ["migration_active", "receives_during_migration", "migration_completed",
       "receives_after_migration"]  # fmt: skip


class World:
    """What the fakes share: a log of what was started and stopped, and the script."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.outcome = "completed"  # what the migration ends as: completed | failed | hang
        self.refuse_capabilities = False
        self.receive_after = True  # the destination guest receives after the switch-over
        self.fail_start: set[str] = set()  # names of things whose start raises SetupError
        self.stale_page = False  # the destination's memory checker finds a stale page
        self.payload: dict[str, Any] = {}  # the tester's payload figures


class FakeProcess:
    def __init__(self, name: str) -> None:
        self.name = name
        self.pid = 4242
        self.returncode: int | None = None
        self.output = OutputStream(name, None)

    def alive(self) -> bool:
        return self.returncode is None


class FakeBackend(VhostBackend):
    program = "testpmd"

    def __init__(self, world: World, config: BackendConfig) -> None:
        super().__init__(config)
        self.world = world
        self._process = FakeProcess(config.name)

    @property
    def process(self) -> Any:
        return self._process

    def start(self) -> None:
        self.world.log.append(f"start {self.config.name}")

    def forward(self) -> None:
        self.world.log.append(f"forward {self.config.name}")

    def wait_guest_ready(self, timeout: float, since: int = 0) -> str:
        return "virtio is now ready for processing"

    def counters(self, port: int = 0) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        self.world.log.append(f"stop {self.config.name}")


class ScanningStream(OutputStream):
    """A memory checker's port: whenever someone waits on it, it scans twice more (and
    reports the stale page the world scripts, on a destination)."""

    def __init__(self, name: str, stale: bool) -> None:
        super().__init__(name, None)
        self.stale = stale
        self.scans = 2

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        bad = int(self.stale)
        for _ in range(2):
            self.scans += 1
            self.feed((BAD if bad and self.scans == 3 else "") + SCAN.format(n=self.scans, bad=bad))
        return super().wait_for(predicate, timeout)


class FakeVm:
    """A QEMU that answers QMP as the script says and emits MIGRATION events."""

    def __init__(self, world: World, spec: VmSpec, _rundir: Any, node: Any) -> None:
        self.world, self.spec, self.node = world, spec, node
        self.process = FakeProcess(spec.name)
        self.console = SimpleNamespace(output=OutputStream(spec.name, None))
        stale = world.stale_page and spec.incoming is not None
        self.checker = (
            SimpleNamespace(output=ScanningStream(f"memcheck-{spec.name}", stale))
            if spec.check_socket is not None
            else None
        )
        self.events: list[dict[str, Any]] = []
        self.status = "none"

    def start(self) -> FakeVm:
        if self.spec.name in self.world.fail_start:
            raise SetupError(f"QEMU {self.spec.name} did not start: scripted")
        self.world.log.append(f"start {self.spec.name}")
        return self

    def run_in_guest(self, cmd: str) -> str:
        if "vhostlm-memcheck" in cmd and self.checker is not None:
            self.world.log.append(f"memcheck on {self.spec.name}")
            self.checker.output.feed(READY + SCAN.format(n=1, bad=0) + SCAN.format(n=2, bad=0))
        return ""

    def stop(self) -> None:
        if f"stop {self.spec.name}" not in self.world.log:
            self.world.log.append(f"stop {self.spec.name}")

    def _event(self, status: str) -> None:
        self.status = status

        data = {"status": status}
        self.events.append({"event": "MIGRATION", "data": data, "timestamp": {"seconds": 1}})

    def qmp(self, command: str, timeout: float = 10.0, **args: Any) -> Any:
        if command == "migrate-set-capabilities" and self.world.refuse_capabilities:
            raise SetupError("QMP migrate-set-capabilities: scripted refusal")
        if command == "migrate":
            self._event("active")
        elif command == "migrate_cancel":
            self._event("cancelled")
        elif command == "migrate-start-postcopy":
            self._event("postcopy-active")
        elif command == "query-status":
            return {"status": "running"}
        elif command == "query-migrate":
            return {"status": self.status, "total-time": 10, "ram": {"transferred": 2**20}}
        return {}

    def event_mark(self) -> int:
        return len(self.events)

    def pull_events(self, wait: float = 0.0) -> list[dict[str, Any]]:
        return []

    def migration(self) -> Any:
        from vhostlm.apps.qemu import MigrationInfo

        return MigrationInfo.parse(self.qmp("query-migrate"))

    def wait_migration(self, since: int, states: Any, timeout: float) -> Any:
        if self.status in ("active", "postcopy-active") and MigrationStatus.ACTIVE not in states:
            if self.world.outcome == "hang":
                raise SetupError(f"QEMU {self.spec.name}: no MIGRATION event in {timeout:.0f} s")
            self._event(self.world.outcome)
        for event in self.events[since:]:
            if MigrationStatus.parse(event["data"]["status"]) in states:
                return MigrationStatus.parse(event["data"]["status"]), event
        raise SetupError(f"QEMU {self.spec.name}: no MIGRATION event in {timeout:.0f} s")

    def wait_event(self, name: str, timeout: float, since: int = 0, match: Any = None) -> Any:
        return {"event": name, "timestamp": {"seconds": 2}}


class FakeReceiver:
    def __init__(self, world: World) -> None:
        self.world = world
        self.commands: list[str] = []
        self.value = 0

    def start(self, shell: Any) -> None:
        self.commands.append("ip link set eth0 up")

    def count(self, shell: Any, timeout: float = 10.0) -> int:
        self.value += 5
        return self.value

    def wait_count(self, shell: Any, minimum: int, timeout: float) -> int | None:
        if shell.role == "backup" and not self.world.receive_after:
            return None
        self.value = max(self.value, minimum)
        return self.value

    def set_queues(self, shell: Any, queues: int, moving_to: Any = None) -> str:
        return f"ethtool -L eth0 combined {queues}"


class FakeGuest(Guest):
    kind = "initramfs"

    def __init__(self, world: World) -> None:
        self.world = world

    def boot_files(self, bed: Topology, role: str) -> BootFiles:
        return BootFiles(Path("/k"), Path("/i"))

    def shell(self, vm: Any) -> GuestShell:
        return SimpleNamespace(role=vm.node.name, console=vm.console, run=vm.run_in_guest)  # type: ignore[return-value]

    def wait_shell(self, vm: Any, timeout: float) -> GuestShell:
        return self.shell(vm)

    def receiver(self, driver: Driver, probes: bool, queues: int) -> Any:
        from vhostlm.apps.guest import KernelReceiver

        rx = FakeReceiver(self.world)
        if driver is Driver.NET:  # the flow checks it can change queues on this one
            rx.__class__ = type("KernelLike", (FakeReceiver, KernelReceiver), {})
        return rx

    def start_dirty_load(self, shell: GuestShell, mb_s: int) -> str:
        return f"dirty {mb_s}"


class FakeTester:
    def __init__(self) -> None:
        self.process = FakeProcess("tester")
        self.sent = 0

    def progress(self) -> tuple[int, int]:
        self.sent += 10
        self.process.output.feed(f"sent {self.sent + 10} replies {self.sent}\n")
        return self.sent, self.sent


class FakeTraffic:
    def __init__(self, world: World, case: str, _env: Any, stack: ExitStack) -> None:
        self.world = world
        self.tester = FakeTester()
        self.legs: list[dict[str, float]] = []
        self.restarts: list[Any] = []  # backends restarted on purpose (reconnect cases)
        self.payload = world.payload
        stack.callback(lambda: world.log.append("stop traffic"))

    def start(self) -> None:
        self.world.log.append("start traffic")

    def sent(self) -> int:
        return self.tester.sent

    def wait_replies(self, count: int, timeout: float) -> bool:
        return True

    def new_leg(self, dest: str) -> dict[str, float]:
        self.legs.append({})
        return self.legs[-1]

    def qmp_marks(
        self, marks: dict[str, float], events: list[dict[str, Any]], clock: Any = None
    ) -> None:
        marks["stop"] = 1.0

    def finish(self, figures: list[Any]) -> dict[str, Any]:
        self.world.log.append(f"finish traffic ({len(figures)} migrations)")
        return {"outage_ms": 12.0, "lost": 3}


class FakeBed(Topology):
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def node(self, role: str) -> Any:
        return SimpleNamespace(name=role, label=role, exists=lambda path: True)

    def nic(self, role: str) -> Nic:
        return Nic(interface="eth0")

    def hugedir(self, role: str) -> str:
        return str(self.tmp)

    def migration_ip(self, role: str) -> str:
        return {"host": "198.18.0.1", "backup": "198.18.0.2"}[role]

    def workdir(self, role: str) -> str:
        return str(self.tmp)

    def guest_files(self, role: str) -> tuple[str, str]:
        return "/k", "/i"

    def sniff_points(self) -> dict[str, Any]:
        return {}

    def secure_sockets(self, role: str, local: Path) -> None:
        pass


def run(
    tmp_path: Path, name: str, world: World | None = None, **opts: Any
) -> tuple[CaseResult, World]:
    """Run case `name` on the fakes; its result and the world's log."""
    world = world or World()
    rundir = SimpleNamespace(run_id="abc123", sockets=tmp_path, runtime=tmp_path)
    env = LabEnv(rundir, FakeBed(tmp_path), None, "tcg", RunOptions(**opts),  # type: ignore[arg-type]
                 Progress(io.StringIO(), tty=False))  # fmt: skip
    drivers = Drivers(
        backend=lambda name, config: FakeBackend(world, config),
        guest=lambda kind: FakeGuest(world),
        vm=lambda spec, rundir, node: FakeVm(world, spec, rundir, node),  # type: ignore[arg-type,return-value]
        traffic=lambda case, env, stack, mac: FakeTraffic(world, case, env, stack),  # type: ignore[arg-type,return-value]
    )
    return run_case(all_cases()[name], env, drivers), world


def names(result: CaseResult) -> list[str]:
    return [s.name for s in result.steps]


@pytest.mark.parametrize(
    ("case", "steps"),
    [
        ("virtio_net", [*PREREQ, "guest_link_up", "vhost_connected", "guest_receives", *LEG]),
        ("virtio_pmd", [*PREREQ, "guest_testpmd", "vhost_connected", "guest_receives", *LEG]),
        ("packed_virtio_net_mq4", [*PREREQ, "guest_link_up", "vhost_connected",
            "guest_receives", "migration_active", "guest_queues_during_migration",
            "receives_during_migration", "migration_completed", "receives_after_migration"]),
        ("postcopy_virtio_net", [*PREREQ, "guest_link_up", "vhost_connected", "guest_receives",
            "migration_active", "receives_during_migration", "postcopy_active",
            "migration_completed", "receives_after_migration"]),
        ("cancel_virtio_net", [*PREREQ, "guest_link_up", "vhost_connected", "guest_receives",
            "migration_active", "receives_during_migration", "migration_cancelled",
            "source_keeps_receiving"]),
        ("multifd_virtio_net", [*PREREQ, "guest_link_up", "vhost_connected", "guest_receives",
            *LEG]),
        ("pingpong_virtio_net", [*PREREQ, "guest_link_up", "vhost_connected", "guest_receives",
            *LEG, "incoming_vm_leg2", *(s + "_leg2" for s in LEG), "incoming_vm_leg3",
            *(s + "_leg3" for s in LEG), "incoming_vm_leg4", *(s + "_leg4" for s in LEG)]),
    ],
)  # fmt: skip
def test_each_case_kind_runs_its_steps_in_order_and_passes(
    tmp_path: Path, case: str, steps: list[str]
) -> None:
    result, world = run(tmp_path, case)
    # a cancelled migration has no switch-over outage to judge
    steps = [*steps, INTACT, *([SOUND] if "cancel" not in case else [])]
    assert names(result) == steps
    assert [s.verdict for s in result.steps] == ["pass"] * len(steps), result.reason
    assert result.verdict == "pass"
    # what was planned is what ran: nothing was left over as skipped
    assert names(result) == CaseFlow(all_cases()[case], _env(tmp_path)).planned_steps()


def _env(tmp_path: Path, **opts: Any) -> LabEnv:
    rundir = SimpleNamespace(run_id="abc123", sockets=tmp_path, runtime=tmp_path)
    return LabEnv(rundir, FakeBed(tmp_path), None, "tcg", RunOptions(**opts),  # type: ignore[arg-type]
                  Progress(io.StringIO(), tty=False))  # fmt: skip


def test_noconverge_is_cancelled_after_the_timeout_and_the_source_goes_on(tmp_path: Path) -> None:
    world = World()
    world.outcome = "hang"
    result, world = run(tmp_path, "noconverge_virtio_net", world, converge_timeout_s=0.1)
    assert names(result) == [*PREREQ, "guest_link_up", "vhost_connected", "guest_receives",
        "guest_dirty_load", "migration_active", "receives_during_migration",
        "did_not_converge", "source_keeps_receiving", INTACT]  # fmt: skip
    steps = {s.name: s for s in result.steps}
    assert steps["guest_dirty_load"].detail == "dirty 64"
    assert steps["did_not_converge"].verdict == "pass"
    assert "did not converge within 0 s" in steps["did_not_converge"].detail
    assert steps["source_keeps_receiving"].verdict == "pass"
    assert result.migration is not None and result.migration.status == "cancelled"
    # the destination went with the cancel; the source stayed until the case's end
    assert world.log.index("stop noconverge_virtio_net-backup") < world.log.index(
        "finish traffic (1 migrations)"
    ) < world.log.index("stop noconverge_virtio_net-host")  # fmt: skip


def test_limits_add_their_step_last(tmp_path: Path) -> None:
    result, _ = run(tmp_path, "virtio_net", max_outage_ms=5.0)
    assert names(result)[-1] == "within_limits"
    assert result.steps[-1].verdict == "fail"
    assert "outage 12.000 ms exceeds --max-outage-ms 5" in result.steps[-1].detail


def test_a_failing_step_skips_the_rest_with_the_reason_and_stops_everything(
    tmp_path: Path,
) -> None:
    world = World()
    world.receive_after = False
    result, world = run(tmp_path, "virtio_net", world, after_timeout_s=0.1)
    steps = {s.name: s for s in result.steps}
    assert steps["receives_after_migration"].verdict == "fail"
    assert result.verdict == "fail"
    assert "receives_after_migration" in result.reason
    assert steps["receives_after_migration"].detail.startswith(
        "after migration the guest on the backup received 5 packets in 0 s (wanted 10)"
    )
    # everything started was stopped, the latest first; traffic figures kept
    assert world.log.index("stop virtio_net-backup") < world.log.index(
        "stop virtio_net-testpmd-backup"
    ) < world.log.index("stop virtio_net-testpmd-host")  # fmt: skip
    assert "finish traffic (1 migrations)" in world.log
    assert result.measure == {"outage_ms": 12.0, "lost": 3}


def test_an_error_before_the_migration_skips_every_later_step(tmp_path: Path) -> None:
    world = World()
    world.fail_start = {"virtio_pmd-backup"}
    result, world = run(tmp_path, "virtio_pmd", world)
    verdicts = {s.name: s.verdict for s in result.steps}
    assert verdicts["backup_vm"] == "error"
    later = names(result)[names(result).index("backup_vm") + 1 :]
    assert later == ["guest_boots", "guest_memcheck", "guest_testpmd", "vhost_connected",
                     "guest_receives", *LEG, INTACT, SOUND]  # fmt: skip
    assert all(verdicts[n] == "skip" for n in later)
    assert all(s.detail == "not run: an earlier step did not pass" for s in result.steps[5:])
    started = [e.removeprefix("start ") for e in world.log if e.startswith("start ")]
    stopped = [e.removeprefix("stop ") for e in world.log if e.startswith("stop ")]
    # teardown is setup reversed (the QEMU that failed to start is stopped too)
    assert stopped == ["virtio_pmd-backup", *reversed(started)]
    assert "start traffic" not in world.log


def test_a_failed_migration_checks_that_the_source_keeps_receiving(tmp_path: Path) -> None:
    world = World()
    world.outcome = "failed"
    result, _ = run(tmp_path, "virtio_net", world)
    steps = {s.name: s for s in result.steps}
    assert steps["migration_completed"].verdict == "fail"
    assert steps["migration_completed"].detail.startswith("migration failed: failed")
    assert steps["source_keeps_receiving"].verdict == "pass"
    assert steps["receives_after_migration"].verdict == "skip"
    assert result.reason == "migration failed: failed"


def test_a_qemu_that_refuses_the_capabilities_skips_the_case(tmp_path: Path) -> None:
    world = World()
    world.refuse_capabilities = True
    result, world = run(tmp_path, "multifd_virtio_net", world)
    assert result.verdict == "skip"
    assert "this QEMU refuses" in result.reason and "'multifd': True" in result.reason
    assert {s.verdict for s in result.steps[names(result).index("migration_active") :]} == {"skip"}
    assert "stop traffic" in world.log


def test_no_backup_backend_is_a_skipped_step_and_then_no_backend_on_the_backup(
    tmp_path: Path,
) -> None:
    result, world = run(tmp_path, "virtio_net", backup_backend=False)
    steps = {s.name: s for s in result.steps}
    assert steps["backup_testpmd"].verdict == "skip"
    assert "--no-backup-backend" in steps["backup_testpmd"].detail
    assert not any("testpmd-backup" in e for e in world.log)


def test_late_start_forwards_only_after_the_guest_driver(tmp_path: Path) -> None:
    result, world = run(tmp_path, "split_virtio_pmd_vhost_late")
    assert result.verdict == "pass"
    fwd = world.log.index("forward split_virtio_pmd_vhost_late-testpmd-host")
    assert fwd > world.log.index("start split_virtio_pmd_vhost_late-host")
    early, _ = run(tmp_path, "split_virtio_pmd")
    assert early.verdict == "pass"


def test_a_spec_is_frozen() -> None:
    spec = all_cases()["virtio_net"]
    with pytest.raises(AttributeError):
        spec.queues = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.parameters["x"] = 1  # type: ignore[index]
    assert replace(spec, queues=4).changes_queues and not spec.changes_queues


def test_a_stale_page_on_the_destination_fails_the_case_naming_it(tmp_path: Path) -> None:
    world = World()
    world.stale_page = True
    result, world = run(tmp_path, "virtio_net", world)
    steps = {s.name: s for s in result.steps}
    assert steps["receives_after_migration"].verdict == "pass"  # traffic alone says all is well
    assert steps[INTACT].verdict == "fail"
    assert "guest-physical 0x204d000" in result.reason and "stale" in result.reason
    assert result.integrity.pages_bad == 1 and result.integrity.bad_pages[0]["page"] == 77
    assert "memcheck on virtio_net-host" in world.log


def test_a_wrong_payload_fails_the_case_with_the_first_sample(tmp_path: Path) -> None:
    world = World()
    world.payload = {"probe_size": 256, "payload_checked": 900, "payload_corrupt": 0,
                     "payload_foreign": 1, "payload_truncated": 0,
                     "samples": [{"seq": 4321, "kind": "foreign", "offset": 126,
                                  "other_seq": 4200}]}  # fmt: skip
    result, _ = run(tmp_path, "virtio_net", world)
    assert result.verdict == "fail"
    assert result.reason.startswith("guest_intact: probe 4321's reply carries probe 4200's")
    assert result.integrity.payload_foreign == 1 and result.integrity.pages_bad == 0


def test_without_the_memory_checker_there_is_no_checker_step_nor_port(tmp_path: Path) -> None:
    result, world = run(tmp_path, "virtio_net", memcheck_mb=0)
    assert "guest_memcheck" not in names(result) and result.verdict == "pass"
    assert result.integrity.checks == ["anomalies"]
    assert not any(line.startswith("memcheck on") for line in world.log)
