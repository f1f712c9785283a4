"""The OVS-DPDK backend's pure parts: command lines, ovs-vsctl arguments, parsed counters."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit import test_flow as flow_tests
from vhostlm.addresses import OVS_VSWITCHD_BINARY
from vhostlm.apps.ovs import (
    OvsFiles,
    OvsTools,
    map_args,
    ovsdb_server_argv,
    parse_dpctl_stats,
    parse_interfaces,
    parse_ovs_version,
    parse_ovsdb_map,
    thread_ids,
    vsctl_argv,
    vswitchd_argv,
)
from vhostlm.backends.base import CLIENT, POSTCOPY, BackendConfig
from vhostlm.backends.ovs import (
    OVS_MB,
    PMD_CPU_MASK,
    OvsBackend,
    bridge_args,
    devargs,
    dpdk_extra,
    other_config,
    ovs_files,
    unsupported,
    vhost_port,
)
from vhostlm.backends.registry import BACKENDS, check_programs, supported_by
from vhostlm.backends.testpmd import TESTPMD_MB, TestpmdBackend
from vhostlm.cli import main
from vhostlm.doctor import Doctor
from vhostlm.errors import UsageError
from vhostlm.nodes.base import Completed
from vhostlm.nodes.local import LocalNode
from vhostlm.plans.catalog import all_cases
from vhostlm.plans.env import LabEnv, RunOptions
from vhostlm.plans.flow import Drivers, run_case
from vhostlm.report.progress import Progress
from vhostlm.runner import budget
from vhostlm.testbed.topology import Nic, Tools

CAPTURES = Path(__file__).parent / "ovs_captures"
SOCK = "/run/vhostlm/abc123/sock/virtio_net-host-vhost.sock"


def config(**kw: Any) -> BackendConfig:
    base: dict[str, Any] = dict(
        name="virtio_net-ovs-dpdk-host",
        node=LocalNode("host", "vhostlm-abc123-host"),
        rundir=None,  # not used by the pure parts
        socket=SOCK,
        nic=Nic(interface="eth0"),
        hugedir="/run/vhostlm/abc123/huge",
        binary="dpdk-testpmd",
        file_prefix="vhostlm-abc123-virtio_net-host",
        client=True,
    )
    base.update(kw)
    return BackendConfig(**base)


def test_registered_as_ovs_dpdk() -> None:
    assert "ovs-dpdk" in BACKENDS and "testpmd" in BACKENDS


def test_files_are_private_short_and_unique_per_backend() -> None:
    files = ovs_files(config())
    assert files.rundir == "/run/vhostlm/abc123/sock"
    assert files.private.startswith("/run/vhostlm/abc123/sock/ovs-")
    assert files.db_sock == f"{files.private}/db.sock"
    assert len(files.bridge) <= 15 and files.mgmt == f"{files.rundir}/{files.bridge}.mgmt"
    other = ovs_files(config(file_prefix="vhostlm-abc123-virtio_net-backup"))
    assert other.private != files.private and other.bridge != files.bridge
    assert max(len(files.db_sock), len(files.vswitchd_ctl), len(files.mgmt)) < 108
    assert files.env() == {
        "OVS_RUNDIR": files.rundir,
        "OVS_DBDIR": files.private,
        "OVS_LOGDIR": files.private,
    }


def test_daemons_run_in_the_foreground_on_the_private_files() -> None:
    files = OvsFiles("/w/ovs-1", "/w", "vlm1")
    db = ovsdb_server_argv(OvsTools(), files)
    assert db[:3] == ["ovsdb-server", "/w/ovs-1/conf.db", "--remote=punix:/w/ovs-1/db.sock"]
    vsd = vswitchd_argv(OvsTools(), files)
    assert vsd[0] == "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
    assert vsd[1] == "unix:/w/ovs-1/db.sock"
    assert "--unixctl=/w/ovs-1/ovs-vswitchd.ctl" in vsd
    assert "--pidfile=/w/ovs-1/ovs-vswitchd.pid" in vsd
    for argv in (db, vsd):
        assert "--detach" not in argv and "--mlockall" not in argv


def test_vsctl_waits_for_vswitchd_unless_told_not_to() -> None:
    files = OvsFiles("/w/ovs-1", "/w", "vlm1")
    argv = vsctl_argv(OvsTools(), files, ["show"], 30)
    assert argv == ["ovs-vsctl", "--db=unix:/w/ovs-1/db.sock", "--timeout=30", "show"]
    assert "--no-wait" in vsctl_argv(OvsTools(), files, ["init"], 5, wait=False)


def test_map_values_are_quoted_atoms() -> None:
    args = map_args("other_config", {"dpdk-extra": "--no-pci --vdev a,b=c", "n": 1})
    assert args == ['other_config:dpdk-extra="--no-pci --vdev a,b=c"', 'other_config:n="1"']


def test_other_config_for_the_lab() -> None:
    pairs = other_config(config())
    assert pairs["dpdk-init"] == "true"
    assert pairs["dpdk-socket-mem"] == pairs["dpdk-socket-limit"] == OVS_MB
    assert pairs["dpdk-hugepage-dir"] == "/run/vhostlm/abc123/huge"
    assert pairs["pmd-cpu-mask"] == PMD_CPU_MASK and int(pairs["pmd-maxsleep"]) > 0
    assert "vhost-postcopy-support" not in pairs
    extra = shlex.split(str(pairs["dpdk-extra"]))
    assert extra[:2] == ["--file-prefix=vhostlm-abc123-virtio_net-host", "--no-pci"]
    assert other_config(config(postcopy=True))["vhost-postcopy-support"] == "true"


def test_pci_port_is_allowed_alone() -> None:
    nic = Nic(pci="0000:3b:00.0", driver="vfio-pci")
    assert devargs(nic, 1) == "0000:3b:00.0"
    assert "-a 0000:3b:00.0" in dpdk_extra(config(nic=nic))
    assert "--no-pci" not in dpdk_extra(config(nic=nic))
    assert devargs(Nic(interface="eth0"), 4) == "net_af_packet0,iface=eth0,qpairs=4"


def test_bridge_client_mode() -> None:
    cfg = config(queues=4)
    args = bridge_args(cfg, ovs_files(cfg))
    assert "datapath_type=netdev" in args and "fail_mode=secure" in args
    assert 'options:dpdk-devargs="net_af_packet0,iface=eth0,qpairs=4"' in args
    assert "options:n_rxq=4" in args
    assert "type=dpdkvhostuserclient" in args
    assert f'options:vhost-server-path="{SOCK}"' in args
    assert vhost_port(cfg) == "vhost0"


def test_bridge_server_mode_port_is_named_by_its_socket() -> None:
    cfg = config(client=False)
    args = bridge_args(cfg, ovs_files(cfg))
    assert "type=dpdkvhostuser" in args
    assert vhost_port(cfg) == "virtio_net-host-vhost.sock"
    assert not any(a.startswith("options:vhost-server-path") for a in args)


def test_flood_is_not_supported() -> None:
    assert unsupported(config()) is None
    assert "full speed" in (unsupported(config(flood=True)) or "")


STATS = "{rx_bytes=4242, rx_dropped=0, rx_packets=70, tx_bytes=1180, tx_packets=12, tx_retries=0}"


def test_parse_ovsdb_map() -> None:
    stats = parse_ovsdb_map(STATS + "\n")
    assert stats["rx_packets"] == 70 and stats["tx_bytes"] == 1180 and len(stats) == 6
    with pytest.raises(ValueError, match="not an OVSDB map"):
        parse_ovsdb_map("ovs-vsctl: no row")


IFACES = json.dumps(
    {
        "data": [
            ["phy0", 2, ["set", []]],
            ["vhost0", 1, ["set", []]],
            ["bad0", -1, "could not open network device bad0 (No such device)"],
            ["vlm1", 65534, ["set", []]],
        ],
        "headings": ["name", "ofport", "error"],
    }
)


def test_parse_interfaces() -> None:
    rows = parse_interfaces(IFACES)
    assert rows["phy0"].ofport == 2 and rows["phy0"].error is None
    assert rows["bad0"].ofport == -1 and "No such device" in (rows["bad0"].error or "")


# captured from OVS 3.1 in the lab (a guest on vhost0 before the migration; synthetic)
DPCTL = """netdev@ovs-netdev:
  lookups: hit:10 missed:2 lost:0
  flows: 2
  port 0: ovs-netdev (tap)
    RX packets:0 errors:0 dropped:0 overruns:0 frame:0
    TX packets:0 errors:0 dropped:0 aborted:0 carrier:0
    collisions:0
    RX bytes:0  TX bytes:0
  port 1: phy0 (dpdk: configured_rx_queues=1, mtu=1500)
    RX packets:73 errors:1 dropped:2 overruns:? frame:?
    TX packets:12 errors:0 dropped:0 aborted:? carrier:?
    collisions:?
    RX bytes:4420 (4.3 KiB)  TX bytes:1180 (1.2 KiB)
  port 2: vhost0 (dpdkvhostuserclient: configured_rx_queues=1, mtu=1500)
    RX packets:12 errors:0 dropped:0 overruns:? frame:?
    TX packets:70 errors:? dropped:3 aborted:? carrier:?
    collisions:?
    RX bytes:1180 (1.2 KiB)  TX bytes:4242 (4.1 KiB)
"""

# real `ovs-appctl dpctl/show -s` of the host's OVS after the guest left: OVS cannot read a
# vhost port with no guest, and the next port's header follows on the same line
DPCTL_NO_GUEST = (CAPTURES / "dpctl-show-s-no-guest.txt").read_text()


def test_parse_dpctl_stats() -> None:
    ports = parse_dpctl_stats(DPCTL)
    assert set(ports) == {"ovs-netdev", "vhost0", "phy0"}
    vhost = ports["vhost0"]
    assert (vhost.rx_packets, vhost.tx_packets, vhost.tx_dropped) == (12, 70, 3)
    assert (vhost.rx_bytes, vhost.tx_bytes, vhost.tx_errors) == (1180, 4242, 0)
    phy = ports["phy0"]
    assert (phy.rx_packets, phy.rx_errors, phy.rx_dropped, phy.rx_bytes) == (73, 1, 2, 4420)


def test_parse_dpctl_stats_of_a_vhost_port_without_guest() -> None:
    ports = parse_dpctl_stats(DPCTL_NO_GUEST)
    assert "vhost0" not in ports  # not the next port's counters
    assert set(ports) == {"ovs-netdev", "phy0", "vlm0049b86c"}
    phy = ports["phy0"]
    assert (phy.rx_packets, phy.tx_packets, phy.rx_bytes, phy.tx_bytes) == (
        6666,
        6225,
        1703532,
        1592180,
    )
    tap = next(p for n, p in ports.items() if n.startswith("vlm"))
    assert tap.tx_dropped == 23


# real `ovs-vsctl get Interface phy0 statistics` (host, lab)
STATS_REAL = (CAPTURES / "vsctl-get-phy0-statistics.txt").read_text()
# real `ovs-vsctl -f json --columns=name,ofport,error list Interface` (host, lab)
IFACES_REAL = (CAPTURES / "vsctl-list-interface.json").read_text()
# real vhost0 statistics (backup, after the migration)
VHOST_REAL = (CAPTURES / "vsctl-get-vhost0-statistics.txt").read_text()


def test_parse_real_statistics_and_interfaces() -> None:
    stats = parse_ovsdb_map(STATS_REAL)
    assert stats["rx_packets"] == 4309 and stats["tx_packets"] == 4315
    assert stats["rx_missed_errors"] == 0 and stats["rx_q0_bytes"] == 1102890
    rows = parse_interfaces(IFACES_REAL)
    assert (rows["vhost0"].ofport, rows["phy0"].ofport) == (1, 2)
    assert all(r.error is None for r in rows.values())
    vhost = parse_ovsdb_map(VHOST_REAL)
    assert (vhost["rx_packets"], vhost["tx_packets"], vhost["rx_q0_good_bytes"]) == (
        184,
        176,
        45454,
    )


def test_pmd_threads_found_by_name() -> None:
    ps = " 100 ovs-vswitchd\n 101 urcu3\n 105 pmd-c01/id:8\n 106 dpdk-intr\n"
    assert thread_ids(ps, "pmd-c") == ["105"]


# --- wired into the run: --backend, its programs, its hugepages, the cases it cannot run ---


def test_parse_ovs_version_says_whether_it_has_dpdk() -> None:
    dpdk = parse_ovs_version("ovs-vswitchd-dpdk (Open vSwitch) 3.1.0\nDPDK 22.11.11\n")
    assert (dpdk.version, dpdk.dpdk) == ((3, 1), "22.11.11")
    assert dpdk.line == "ovs-vswitchd-dpdk (Open vSwitch) 3.1.0"
    plain = parse_ovs_version("ovs-vswitchd (Open vSwitch) 3.1.0\n")
    assert (plain.version, plain.dpdk) == ((3, 1), None)
    assert parse_ovs_version("bash: no such file\n").version is None


def test_each_backend_names_its_binary_once() -> None:
    tools = Tools(testpmd="/opt/dpdk/dpdk-testpmd")
    assert TestpmdBackend.binary(tools) == "/opt/dpdk/dpdk-testpmd"
    assert OvsBackend.binary(tools) == OVS_VSWITCHD_BINARY == OvsTools().vswitchd
    assert list(OvsBackend.programs(tools)) == [
        "ovs-vswitchd", "ovsdb-server", "ovsdb-tool", "ovs-vsctl", "ovs-appctl", "ovs-ofctl",
    ]  # fmt: skip


def test_a_missing_program_is_one_line_naming_node_and_package() -> None:
    def which(binary: str) -> str | None:
        return None if binary.endswith("ovs-vswitchd-dpdk") else binary

    check_programs("testpmd", {"node host (h1)": (which, Tools())})  # testpmd is there
    with pytest.raises(UsageError) as err:
        check_programs("ovs-dpdk", {"node host (h1)": (which, Tools())})
    assert str(err.value) == (
        f"--backend ovs-dpdk: {OVS_VSWITCHD_BINARY} not found on node host (h1): "
        "apt-get install openvswitch-switch-dpdk (or run `make run`)"
    )


def test_the_run_reserves_each_backends_hugepages() -> None:
    testpmd, ovs = budget(RunOptions()), budget(RunOptions(backend="ovs-dpdk"))
    assert (testpmd.backend_mb, ovs.backend_mb) == (TESTPMD_MB, OVS_MB)
    assert ovs.lab_pages() - testpmd.lab_pages() == 2 * (OVS_MB - TESTPMD_MB) // 2


def test_cases_list_the_backends_that_can_run_them() -> None:
    cases = all_cases()
    assert supported_by(cases["virtio_net"].backend_needs) == ["testpmd", "ovs-dpdk"]
    assert supported_by(cases["packed_virtio_net_mq4"].backend_needs) == ["testpmd", "ovs-dpdk"]
    # OVS sets postcopy support on dpdkvhostuserclient ports only (lib/netdev-dpdk.c)
    assert supported_by(cases["postcopy_virtio_net"].backend_needs) == ["testpmd"]
    assert supported_by(cases["postcopy_virtio_net"].backend_needs | {CLIENT}) == [
        "testpmd", "ovs-dpdk"]  # fmt: skip
    assert supported_by(cases["dirty_rx_virtio_net"].backend_needs) == ["testpmd"]


def test_list_shows_the_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert "{testpmd,ovs-dpdk}" in lines["virtio_net"].split()
    assert "{testpmd}" in lines["dirty_rx_virtio_net"].split()
    assert "{testpmd,ovs-dpdk:client}" in lines["postcopy_virtio_net"].split()


def test_postcopy_on_ovs_in_server_mode_is_refused_naming_client_mode() -> None:
    """QEMU would refuse postcopy-ram on a dpdkvhostuser port: the reason says what works."""
    why = OvsBackend.unsupported({POSTCOPY})
    assert why is not None and "--vhost-mode client" in why and "dpdkvhostuserclient" in why
    assert OvsBackend.unsupported({POSTCOPY, CLIENT}) is None
    assert TestpmdBackend.unsupported({POSTCOPY}) is None


def test_flow_runs_on_the_option_backend_and_records_it(tmp_path: Path) -> None:
    seen: list[tuple[str, BackendConfig]] = []
    world = flow_tests.World()

    def backend(name: str, cfg: BackendConfig) -> flow_tests.FakeBackend:
        seen.append((name, cfg))
        return flow_tests.FakeBackend(world, cfg)

    result = run_case(all_cases()["virtio_net"], flow_env(tmp_path, backend="ovs-dpdk"),
                      flow_drivers(world, backend))  # fmt: skip
    assert result.verdict == "pass", result.reason
    assert result.options["backend"] == "ovs-dpdk"
    assert [(n, c.binary) for n, c in seen] == [("ovs-dpdk", OVS_VSWITCHD_BINARY)] * 2
    assert seen[0][1].name == "virtio_net-ovs-dpdk-host"


def test_a_case_the_backend_cannot_run_is_a_skip_with_nothing_started(tmp_path: Path) -> None:
    world = flow_tests.World()

    def backend(name: str, cfg: BackendConfig) -> flow_tests.FakeBackend:
        raise AssertionError("no backend may start for a case it cannot run")

    case = all_cases()["dirty_rx_virtio_net"]
    result = run_case(case, flow_env(tmp_path, backend="ovs-dpdk"), flow_drivers(world, backend))
    assert result.verdict == "skip"
    assert result.reason == (
        "not on --backend ovs-dpdk: OVS-DPDK cannot send into the guest at full speed "
        "(a testpmd txonly flood)"
    )
    assert all(s.verdict == "skip" for s in result.steps) and world.log == []
    # testpmd runs the same case
    passed = run_case(case, flow_env(tmp_path), flow_drivers(flow_tests.World()))
    assert passed.options["backend"] == "testpmd" and passed.verdict != "skip"


def flow_env(tmp_path: Path, **opts: Any) -> LabEnv:
    """The flow's environment on test_flow's fake testbed."""
    rundir = SimpleNamespace(run_id="abc123", sockets=tmp_path, runtime=tmp_path)
    return LabEnv(rundir, flow_tests.FakeBed(tmp_path), None, "tcg", RunOptions(**opts),  # type: ignore[arg-type]
                  Progress(io.StringIO(), tty=False))  # fmt: skip


def flow_drivers(world: flow_tests.World, backend: Any = None) -> Drivers:
    """test_flow's fakes, with `backend` making the backends."""
    return Drivers(
        backend=backend or (lambda name, cfg: flow_tests.FakeBackend(world, cfg)),
        guest=lambda kind: flow_tests.FakeGuest(world),
        vm=lambda spec, rundir, node: flow_tests.FakeVm(world, spec, rundir, node),  # type: ignore[arg-type,return-value]
        traffic=lambda case, env, stack, mac: flow_tests.FakeTraffic(world, case, env, stack),  # type: ignore[arg-type,return-value]
    )


class DoctorNode:
    """A node for the doctor: `which` finds what `present` lists, `--version` says `version`."""

    def __init__(self, present: set[str], version: str) -> None:
        self.present = present
        self.version = version

    def which(self, binary: str) -> str | None:
        return binary if binary in self.present else None

    def execute(self, argv: list[str], timeout: float = 30.0) -> Completed:
        if argv[0] in self.present and argv[1:] == ["--version"]:
            return Completed(0, self.version, "")
        return Completed(127, "", f"{argv[0]}: not found")


def doctor_lines(node: DoctorNode, backend: str = "ovs-dpdk") -> dict[str, tuple[bool | None, str]]:
    doc = Doctor()
    doc.backend("host", node, backend)  # type: ignore[arg-type]
    return {c.what: (c.ok, c.fix) for c in doc.checks}


def test_doctor_checks_ovs_programs_version_and_dpdk() -> None:
    every = set(OvsTools().programs().values())
    good = doctor_lines(
        DoctorNode(every, "ovs-vswitchd-dpdk (Open vSwitch) 3.1.0\nDPDK 22.11.11\n")
    )
    assert {what: ok for what, (ok, _) in good.items()} == {
        "ovs programs": True, "ovs-vswitchd": True, "ovs dpdk": True, "ovs vhost client": True,
    }  # fmt: skip
    plain = doctor_lines(DoctorNode(every, "ovs-vswitchd (Open vSwitch) 3.1.0\n"))
    assert plain["ovs dpdk"] == (False, "apt-get install openvswitch-switch-dpdk (its "
                                 "ovs-vswitchd-dpdk)")  # fmt: skip
    old = doctor_lines(DoctorNode(every, "ovs-vswitchd (Open vSwitch) 2.5.0\nDPDK 2.2.0\n"))
    assert old["ovs vhost client"][0] is False
    none = doctor_lines(DoctorNode(set(), ""))
    assert none["ovs programs"][0] is False and none["ovs-vswitchd"][0] is False
    assert doctor_lines(DoctorNode(set(), ""), "testpmd") == {}  # testpmd: `programs` checks it
