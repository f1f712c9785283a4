"""The OVS-DPDK backend's pure parts: command lines, ovs-vsctl arguments, parsed counters."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from vhostlm.apps.ovs import (
    OvsFiles,
    OvsTools,
    map_args,
    ovsdb_server_argv,
    parse_dpctl_stats,
    parse_interfaces,
    parse_ovsdb_map,
    thread_ids,
    vsctl_argv,
    vswitchd_argv,
)
from vhostlm.backends.base import BackendConfig
from vhostlm.backends.ovs import (
    OVS_MB,
    PMD_CPU_MASK,
    bridge_args,
    devargs,
    dpdk_extra,
    other_config,
    ovs_files,
    unsupported,
    vhost_port,
)
from vhostlm.backends.registry import BACKENDS
from vhostlm.nodes.local import LocalNode
from vhostlm.testbed.topology import Nic

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
