"""Backend reconnect cases: the specs, the restart steps in the flow (fakes), the recovery's
measurement and the QEMU lines a restart on purpose makes expected."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.test_flow import (
    INTACT,
    LEG,
    PREREQ,
    SOUND,
    FakeBackend,
    FakeBed,
    FakeGuest,
    FakeProcess,
    FakeTraffic,
    FakeVm,
    World,
    names,
)
from vhostlm.apps.testpmd import VHOST_READY_RE
from vhostlm.backends.base import CLIENT, BackendConfig
from vhostlm.backends.ovs import OvsBackend
from vhostlm.backends.registry import supported_by
from vhostlm.integrity.anomalies import FATAL, WARNING, Anomaly, expected_at_restart
from vhostlm.measure.outage import analyse, noise_floor
from vhostlm.measure.reconnect import (
    RestartMarks,
    quiet_spans,
    reconnect_figures,
    recovery_gap,
    segments,
)
from vhostlm.plans import restart
from vhostlm.plans.catalog import PLANS, all_cases
from vhostlm.plans.env import LabEnv, RunOptions
from vhostlm.plans.flow import CaseFlow, Drivers, run_case
from vhostlm.plans.spec import Restart
from vhostlm.report.progress import Progress
from vhostlm.report.results import CaseResult
from vhostlm.testbed.topology import Nic

READY_LINE = "VHOST_CONFIG: (/run/x.sock) virtio is now ready for processing.\n"


class RestartingBackend(FakeBackend):
    """A fake backend that can be restarted: each restart is a new process whose output
    says the guest's device is ready again, unless the world says it never reconnects."""

    ready_re = re.compile(VHOST_READY_RE)

    def __init__(self, world: World, config: BackendConfig, reconnects: bool) -> None:
        super().__init__(world, config)
        self.reconnects = reconnects
        self._process.output.feed(READY_LINE)  # the guest's device, ready at the start

    def mark(self) -> int:
        return 0  # the leg's "ready" mark: the line above, at once

    def _halt(self) -> None:
        self.world.log.append(f"halt {self.config.name}")
        self._process.returncode = 0

    def _respawn(self) -> None:
        self.world.log.append(f"respawn {self.config.name}-restart{self.restarts}")
        self._process = FakeProcess(f"{self.config.name}-restart{self.restarts}")
        self._process.pid = 5000 + self.restarts
        self._process.output.feed("EAL: probing\nPort 0 up\n")
        if self.reconnects:
            self._process.output.feed(READY_LINE)


class MeasuringTraffic(FakeTraffic):
    """FakeTraffic whose figures have a reconnect object for each restart recorded."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ready_lines: dict[int, str] = {}

    def finish(self, figures: list[Any]) -> dict[str, Any]:
        measure = super().finish(figures)
        if self.restarts:
            measure["reconnect"] = {
                "role": self.restarts[0].role, "program": self.restarts[0].program,
                "recovery_ms": 250.0, "recovery_uncertainty_ms": 9.0, "lost": 240,
                "segments": {"stopping_ms": 100.0, "starting_ms": 150.0},
            }  # fmt: skip
        return measure


def _env(tmp_path: Path, **opts: Any) -> LabEnv:
    rundir = SimpleNamespace(run_id="abc123", sockets=tmp_path, runtime=tmp_path)
    return LabEnv(rundir, FakeBed(tmp_path), None, "tcg", RunOptions(**opts),  # type: ignore[arg-type]
                  Progress(io.StringIO(), tty=False), qemu_version=(10, 0))  # fmt: skip


def run(
    tmp_path: Path, name: str, reconnects: bool = True, **opts: Any
) -> tuple[CaseResult, World, list[Any], list[BackendConfig]]:
    """Run case `name` on the fakes: its result, the world, the VMs' specs, the backends'
    configs."""
    world = World()
    vms: list[Any] = []
    configs: list[BackendConfig] = []

    def backend(_name: str, config: BackendConfig) -> RestartingBackend:
        configs.append(config)
        return RestartingBackend(world, config, reconnects)

    def vm(spec: Any, rundir: Any, node: Any) -> FakeVm:
        vms.append(spec)
        return FakeVm(world, spec, rundir, node)

    drivers = Drivers(
        backend=backend,
        guest=lambda kind: FakeGuest(world),
        vm=vm,  # type: ignore[arg-type]
        traffic=lambda case, env, stack, mac: MeasuringTraffic(world, case, env, stack),  # type: ignore[arg-type,return-value]
    )
    return run_case(all_cases()[name], _env(tmp_path, **opts), drivers), world, vms, configs


# -- the cases -------------------------------------------------------------------------------


CLIENT_CASES = ["reconnect_dest_virtio_net", "reconnect_source_virtio_net"]
SERVER_CASES = ["reconnect_dest_server_virtio_net", "reconnect_source_server_virtio_net"]


def test_the_reconnect_plan_has_each_restart_in_client_and_in_server_mode() -> None:
    cases = {c.name: c for c in PLANS["reconnect"]}
    assert list(cases) == [*CLIENT_CASES, *SERVER_CASES]
    for mode, names_ in (("client", CLIENT_CASES), ("server", SERVER_CASES)):
        dest, source = (cases[n] for n in names_)
        assert dest.restart is Restart.DESTINATION and source.restart is Restart.SOURCE
        for case in (dest, source):
            assert case.vhost_mode == mode
            assert (CLIENT in case.backend_needs) is (mode == "client")
            assert supported_by(case.backend_needs) == ["testpmd", "ovs-dpdk"]
            assert case in PLANS["all"]
    # a server-mode case is its client-mode twin with the mode alone changed
    for client, server in zip(CLIENT_CASES, SERVER_CASES, strict=True):
        twin = replace(cases[server], name=client, vhost_mode="client", doc=cases[client].doc)
        assert twin == cases[client]
    assert all_cases()["virtio_net"].vhost_mode is None  # the others follow --vhost-mode


@pytest.mark.parametrize(
    ("case", "steps"),
    [
        ("reconnect_dest_virtio_net", [*PREREQ, "guest_link_up", "vhost_connected",
            "guest_receives", *LEG, "restart_destination_backend", INTACT, SOUND,
            "reconnect_recovered"]),
        ("reconnect_source_virtio_net", [*PREREQ, "guest_link_up", "vhost_connected",
            "guest_receives", "restart_source_backend", *LEG, INTACT, SOUND,
            "reconnect_recovered"]),
    ],
)  # fmt: skip
def test_a_reconnect_case_restarts_its_backend_in_client_mode_and_passes(
    tmp_path: Path, case: str, steps: list[str]
) -> None:
    result, world, vms, configs = run(tmp_path, case)  # no --vhost-mode given: server
    assert names(result) == steps, result.reason
    assert names(result) == CaseFlow(all_cases()[case], _env(tmp_path)).planned_steps()
    assert [s.verdict for s in result.steps] == ["pass"] * len(steps), result.reason
    assert result.options["vhost_mode"] == "client"
    assert result.options["qemu_reconnect_ms"] == 0
    assert all(spec.vhost_server for spec in vms)  # QEMU listens (server=on) ...
    assert all(config.client for config in configs)  # ... and every backend connects
    assert all(spec.reconnect_ms == 0 for spec in vms)  # the backend reconnects, not QEMU
    role = "backup" if "dest" in case else "host"
    other = "host" if role == "backup" else "backup"
    name = f"{case}-testpmd-{role}"
    assert world.log.count(f"halt {name}") == 1 and f"respawn {name}-restart1" in world.log
    assert not any(e.startswith(f"halt {case}-testpmd-{other}") for e in world.log)
    # restarted, then forwarding again; the new process is the one stopped at the end
    assert world.log.index(f"respawn {name}-restart1") < world.log.index(
        f"forward {name}", world.log.index(f"respawn {name}-restart1")
    )  # fmt: skip
    step = next(s for s in result.steps if s.name.startswith("restart_"))
    assert f"the {role} testpmd restarted (pid 4242 -> 5001)" in step.detail
    assert "virtio is now ready for processing" in step.detail
    assert {"stop_ms", "start_ms", "ready_after_restart_ms"} <= set(step.figures)
    recovered = result.steps[-1]
    assert recovered.figures["recovery_ms"] == 250.0
    assert recovered.detail.startswith(f"recovered in 250.0 ms ± 9.0 ms after the {role} testpmd")


def test_a_migration_to_the_backup_happens_after_the_source_restart(tmp_path: Path) -> None:
    result, world, _, _ = run(tmp_path, "reconnect_source_virtio_net")
    assert result.verdict == "pass", result.reason
    restarted = world.log.index("respawn reconnect_source_virtio_net-testpmd-host-restart1")
    # the destination QEMU was started before, the migration runs after: nothing of it
    # is stopped before the restart
    assert "stop reconnect_source_virtio_net-backup" not in world.log[:restarted]


@pytest.mark.parametrize(
    ("case", "who"),
    [
        ("reconnect_dest_virtio_net", "the backup testpmd did not reconnect"),  # it connects
        ("reconnect_dest_server_virtio_net", "QEMU did not reconnect to the backup testpmd"),
    ],
    ids=["client", "server"],
)
def test_a_reconnect_that_never_happens_fails_with_the_backends_last_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, who: str
) -> None:
    """Client mode: the new backend never connects to QEMU; server mode: QEMU never connects
    to the new backend. Each fails naming who did not, with the backend's last lines."""
    monkeypatch.setattr(restart, "RECONNECT_TIMEOUT_S", 0.1)
    result, world, _, _ = run(tmp_path, case, reconnects=False)
    steps = {s.name: s for s in result.steps}
    assert steps["restart_destination_backend"].verdict == "fail"
    assert result.verdict == "fail"
    assert result.reason.startswith(
        f"restart_destination_backend: {who} after its restart "
        '(pid 4242 -> 5001): no "virtio is now ready for processing" within 0.1 s; its last '
        "lines: EAL: probing | Port 0 up"
    ), result.reason
    assert steps["reconnect_recovered"].verdict == "skip"
    # everything was stopped, the restarted backend too
    assert f"stop {case}-testpmd-backup" in world.log
    assert f"stop {case}-testpmd-host" in world.log


def test_a_restart_is_not_a_dead_process_for_the_vitals(tmp_path: Path) -> None:
    """The old process ended on purpose; the new one is watched in its place."""
    result, _, _, _ = run(tmp_path, "reconnect_source_virtio_net")
    assert "killed" not in result.reason and "exited" not in result.reason
    assert result.verdict == "pass"


# -- server mode: QEMU reconnects to the restarted backend ------------------------------------


@pytest.mark.parametrize(
    ("case", "restart_step"),
    [("reconnect_dest_server_virtio_net", "restart_destination_backend"),
     ("reconnect_source_server_virtio_net", "restart_source_backend")],
)  # fmt: skip
def test_a_server_mode_reconnect_case_gives_every_qemu_reconnect_ms_and_passes(
    tmp_path: Path, case: str, restart_step: str
) -> None:
    """Same steps as the client-mode twin; the backends listen, and each QEMU, their
    client, has the reconnect delay (whichever side restarts); figures the same."""
    twin = case.replace("_server", "")
    result, world, vms, configs = run(tmp_path, case, vhost_mode="client")  # pinned: server
    assert result.verdict == "pass", result.reason
    assert names(result) == names(run(tmp_path / "twin", twin)[0])
    assert names(result) == CaseFlow(all_cases()[case], _env(tmp_path)).planned_steps()
    assert result.options["vhost_mode"] == "server"
    assert result.options["qemu_reconnect_ms"] == restart.QEMU_RECONNECT_MS == 100
    assert len(vms) == 2 and not any(spec.vhost_server for spec in vms)  # QEMU connects
    assert all(spec.reconnect_ms == restart.QEMU_RECONNECT_MS for spec in vms)
    assert all(spec.qemu_version == (10, 0) for spec in vms)  # the env's, for the option
    assert not any(config.client for config in configs)  # every backend listens
    role = "backup" if "dest" in case else "host"
    assert f"respawn {case}-testpmd-{role}-restart1" in world.log
    step = next(s for s in result.steps if s.name == restart_step)
    assert step.detail.startswith(f"the {role} testpmd restarted (pid 4242 -> 5001)")
    assert result.steps[-1].figures["recovery_ms"] == 250.0  # measured as in client mode


def test_other_cases_give_qemu_no_reconnect_in_either_mode(tmp_path: Path) -> None:
    """Without a restart on purpose a backend gone is a fault: QEMU must not wait for it."""
    for mode in ("server", "client"):
        result, _, vms, _ = run(tmp_path / mode, "virtio_net", vhost_mode=mode)
        assert result.verdict == "pass", result.reason
        assert result.options["qemu_reconnect_ms"] == 0
        assert all(spec.reconnect_ms == 0 for spec in vms)


def test_a_server_mode_ovs_restart_keeps_its_dpdkvhostuser_port() -> None:
    """OVS in server mode: the kept database holds the `dpdkvhostuser` port, whose socket
    the new ovs-vswitchd makes again; nothing of the bridge is re-created."""
    node = RecordingNode(vhost_port="c-host-vhost.sock")
    rundir = SimpleNamespace(log_path=lambda name: Path("/dev/null"))
    sock = "/run/vhostlm/x/sock/c-host-vhost.sock"
    config = BackendConfig(name="c-ovs-dpdk-host", node=node, rundir=rundir,  # type: ignore[arg-type]
                           socket=sock, nic=Nic(interface="eth0"), hugedir="/h", binary="",
                           file_prefix="vhostlm-x-c-host", client=False)  # fmt: skip
    backend = OvsBackend(config)
    backend.start()
    backend.forward()
    assert any("type=dpdkvhostuser" in " ".join(c) for c in node.commands)
    assert backend.vhost_port == "c-host-vhost.sock"  # OVS_RUNDIR/<port>: the case's socket
    node.commands.clear()
    backend.restart()
    flat = [" ".join(c) for c in node.commands]
    assert node.stopped == ["c-ovs-dpdk-host"]
    assert not any("add-br" in c or "add-port" in c for c in flat)
    assert any("add-flow" in c and "actions=NORMAL" in c for c in flat)


# -- the measurement -------------------------------------------------------------------------


def _stream(
    pps: float, seconds: float, dead: tuple[float, float]
) -> tuple[list[float], list[tuple[int, float]]]:
    """Probes every 1/pps s from t=100; each answered 1 ms later unless sent in `dead`."""
    send = [100.0 + i / pps for i in range(int(pps * seconds))]
    replies = [(i, t + 0.001) for i, t in enumerate(send) if not dead[0] <= t <= dead[1]]
    return send, replies


def test_the_recovery_is_the_reply_gap_across_the_old_backends_end() -> None:
    times = [1.0, 2.0, 3.0, 7.0, 8.0]
    assert recovery_gap(times, 3.5) == (3.0, 7.0)
    assert recovery_gap(times, 9.0) is None  # never answered again
    assert recovery_gap(times, 0.5) is None


def test_segments_come_in_their_order_and_add_up_to_the_recovery() -> None:
    marks = {"restart": 10.0, "down": 10.1, "ready": 10.5, "up": 10.6, "reconnected": 11.5}
    seg = segments(marks, 9.999, 10.7)
    assert list(seg) == ["until_restart_ms", "stopping_ms", "until_ready_ms", "starting_ms",
                         "to_first_reply_ms"]  # fmt: skip
    assert sum(seg.values()) == pytest.approx(701.0)
    assert seg["until_ready_ms"] == pytest.approx(400.0)  # the ready line before the prompt


def test_reconnect_figures_measure_the_gap_like_an_outage() -> None:
    send, replies = _stream(1000, 4.0, (101.5, 102.1))
    marks = {"restart": 101.5, "down": 101.6, "up": 102.0, "ready": 102.05}
    figs = reconnect_figures(
        RestartMarks("backup", "testpmd", 1, 2, marks, "ready"), send, replies, 1000, {"p99": 5.0}
    )
    assert figs["recovery_ms"] == pytest.approx(601.0, abs=1.5)
    assert figs["lost"] == pytest.approx(600, abs=2)
    assert figs["recovery_uncertainty_ms"] > 0
    assert figs["ready_after_restart_ms"] == pytest.approx(550.0)
    assert sum(figs["segments"].values()) == pytest.approx(figs["recovery_ms"], abs=0.01)
    # no reply after the restart: no recovery
    dead, answered = _stream(1000, 4.0, (101.5, 200.0))
    never = reconnect_figures(
        RestartMarks("backup", "testpmd", 1, 2, marks), dead, answered, 1000, {}
    )
    assert never["recovery_ms"] is None and never["events"] == marks


def test_a_restart_gap_is_no_noise_and_its_loss_is_not_unexplained() -> None:
    send, replies = _stream(1000, 8.0, (101.0, 101.6))
    times = sorted(t for _, t in replies)
    marks = RestartMarks("host", "testpmd", 1, 2, {"restart": 101.0, "down": 101.1})
    quiet = quiet_spans([marks], times)
    assert quiet[0][0] <= 101.0 and quiet[0][1] == pytest.approx(101.601, abs=0.002)
    # the restart came before migrate (at 105): without `quiet` it is the noise max, and
    # its lost probes are loss outside the switch-over window (106-107)
    assert noise_floor(times, 105.0)["max"] > 500
    assert noise_floor(times, 105.0, quiet)["max"] < 5
    plain = analyse(send, replies, 1000, [(106.0, 107.0)], baseline_end=105.0)
    assert plain.lost_outside_window >= 590
    figs = analyse(send, replies, 1000, [(106.0, 107.0)], baseline_end=105.0, quiet=quiet)
    assert figs.lost_outside_window == 0 and figs.lost >= 590


# -- what QEMU prints when its backend goes ---------------------------------------------------


def test_qemus_ring_restore_at_a_restart_on_purpose_is_expected_and_elsewhere_fatal() -> None:
    def ring(at: float) -> Anomaly:
        return Anomaly("QEMU x-backup", at, "qemu-system-x86_64: vhost VQ 0 ring restore "
                       "failed: -22: Invalid argument (22)", "qemu_ring_restore_failed",
                       FATAL, "the ring state was lost")  # fmt: skip

    other = Anomaly("guest console x", 10.2, "Kernel panic - not syncing", "guest_panic",
                    FATAL, "panicked")  # fmt: skip
    found = expected_at_restart([ring(10.2), ring(20.0), other], [(10.0, 10.5)])
    assert found[0].severity == WARNING
    assert found[0].reason.startswith("expected: the backend was restarted on purpose")
    assert found[1].severity == FATAL and found[2].severity == FATAL


def test_the_ready_line_of_a_restarted_backend_is_found_from_its_new_process() -> None:
    world = World()
    config = BackendConfig(name="b", node=None, rundir=None, socket="/s", nic=None,  # type: ignore[arg-type]
                           hugedir="/h", binary="testpmd", file_prefix="p")  # fmt: skip
    backend = RestartingBackend(world, config, reconnects=True)
    done = backend.restart()
    assert done.old_pid == 4242 and backend.process.pid == 5001
    assert done.stopping <= done.down <= done.up
    found = backend.ready_at(0, timeout=1)
    assert found is not None and VHOST_READY_RE in found[1]
    assert [p.name for p in backend.processes] == ["b", "b-restart1"]
    assert backend.log().startswith(READY_LINE) and backend.log().endswith(
        "Port 0 up\n" + READY_LINE
    )


# -- OVS: a restart is ovs-vswitchd's alone, on the kept database ----------------------------


class RecordingNode:
    """A node that runs nothing: it records every command and program, and its programs
    print what OVS prints once DPDK is up."""

    name = label = "host"

    def __init__(self, vhost_port: str = "vhost0") -> None:
        self.vhost_port = vhost_port  # the guest's port, as `ovs-vsctl list Interface` has it
        self.commands: list[list[str]] = []
        self.started: list[str] = []
        self.stopped: list[str] = []

    def execute(self, argv: Any, timeout: float = 30.0) -> Any:
        self.commands.append(list(argv))
        out = ""
        if "list" in argv and "Interface" in argv:
            rows = [["phy0", 2, ["set", []]], [self.vhost_port, 1, ["set", []]]]
            out = json.dumps({"headings": ["name", "ofport", "error"], "data": rows})
        return SimpleNamespace(status=0, stdout=out, stderr="")

    def run(self, argv: Any, check: bool = True, timeout: float = 30.0) -> str:
        return str(self.execute(argv, timeout).stdout)

    def process(self, name: str, argv: Any, rundir: Any, env: Any = None) -> Any:
        node = self
        proc = FakeProcess(name)
        proc.rundir = rundir  # type: ignore[attr-defined]

        def start() -> Any:
            node.started.append(name)
            proc.output.feed("dpdk|INFO|DPDK Enabled - initialized\n")
            return proc

        def expect(pattern: str, timeout: float, since: int = 0) -> str:
            return proc.output.expect(pattern, timeout, since).group(0)

        def stop(timeout: float = 10.0, sig: int = 15) -> int:
            node.stopped.append(name)
            proc.returncode = 0
            return 0

        proc.start = start  # type: ignore[attr-defined]
        proc.expect = expect  # type: ignore[attr-defined]
        proc.stop = stop  # type: ignore[attr-defined]
        proc.wait = lambda timeout: 0  # type: ignore[attr-defined]
        return proc


def test_an_ovs_restart_is_its_vswitchd_alone_on_the_kept_database() -> None:
    node = RecordingNode()
    rundir = SimpleNamespace(log_path=lambda name: Path("/dev/null"))
    config = BackendConfig(name="c-ovs-dpdk-host", node=node, rundir=rundir,  # type: ignore[arg-type]
                           socket="/run/vhostlm/x/sock/c-host-vhost.sock",
                           nic=Nic(interface="eth0"), hugedir="/h", binary="",
                           file_prefix="vhostlm-x-c-host", client=True)  # fmt: skip
    backend = OvsBackend(config)
    backend.start()
    backend.forward()
    first = backend.process
    node.commands.clear()
    done = backend.restart()
    assert node.started == ["c-ovs-dpdk-host-ovsdb", "c-ovs-dpdk-host",
                            "c-ovs-dpdk-host-restart1"]  # fmt: skip
    assert node.stopped == ["c-ovs-dpdk-host"]  # ovsdb-server and its database stay
    flat = [" ".join(c) for c in node.commands]
    exits = [c for c in flat if c.endswith(" exit") or " exit " in c]
    assert len(exits) == 1 and "--cleanup" not in exits[0] and "ovs-vswitchd.ctl" in exits[0]
    assert not any("ovsdb-tool" in c or "add-br" in c for c in flat)  # nothing re-created
    assert any("external_ids:vhostlm-restarts=1" in c and "--no-wait" not in c for c in flat)
    assert any("add-flow" in c and "actions=NORMAL" in c for c in flat)  # the flow, again
    assert backend.process is not first and backend.processes == [first, backend.process]
    assert done.old_pid == first.pid and done.stopping <= done.down <= done.up
