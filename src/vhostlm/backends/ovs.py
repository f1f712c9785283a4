"""Open vSwitch with DPDK as the vhost-user backend: a userspace bridge, learning (NORMAL).

Per node and case, a private OVS (`apps.ovs.OvsSwitch`): its own database, OVS_RUNDIR,
control sockets and pidfiles in the run's directory, DPDK with its own `--file-prefix`, a
hugepage budget (`OVS_MB`) and one PMD thread (`pmd-cpu-mask`) that sleeps when idle
(`pmd-maxsleep`) and runs at nice 19. The bridge (`datapath_type=netdev`,
`fail_mode=secure`: nothing forwards before `forward()`) has the physical port (`type=dpdk`:
an af_packet vdev in the lab, the PCI device on a testbed) and the guest's port:
`dpdkvhostuserclient` when QEMU listens (`--vhost-mode client`), else `dpdkvhostuser`
(OVS listens, on the socket path the case gives). `forward()` adds the one flow
`actions=NORMAL`: a learning switch, so the guest's announce moves its traffic to the
backup. Postcopy: `vhost-postcopy-support=true`, and ovs-vswitchd never runs with
`--mlockall`.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterable

from vhostlm.addresses import OVS_PACKAGE
from vhostlm.apps.ovs import OvsFiles, OvsSwitch, OvsTools, ovsdb_value
from vhostlm.apps.testpmd import VHOST_READY_RE, PortStats
from vhostlm.backends.base import CLIENT, FLOOD, POSTCOPY, BackendConfig, VhostBackend
from vhostlm.errors import SetupError
from vhostlm.nodes.base import NodeProcess
from vhostlm.testbed.topology import Nic, Tools

OVS_MB = 256  # hugepage memory of each ovs-vswitchd (dpdk-socket-mem and -limit)
PMD_CPU_MASK = "0x2"  # one PMD thread, on CPU 1 (testpmd's forwarding lcore's)
PMD_MAXSLEEP_US = 500  # an idle PMD sleeps up to this long per poll (OVS 3.1's maximum: 10000)
PMD_NICE = 19  # as testpmd's forwarding lcores: it yields to QEMU on a small machine
PHY_PORT = "phy0"
VHOST_PORT = "vhost0"  # the client-mode port; a server-mode port is named by its socket
FLOW = "priority=0,actions=NORMAL"
# as for testpmd: the vhost library's "virtio is now ready for processing." at INFO
VHOST_LOG_LEVEL = "--log-level=lib.vhost.config:info"


def instance_tag(config: BackendConfig) -> str:
    """8 hex digits unique to this backend (its DPDK file prefix is unique in the run):
    short, for the bridge's interface name (15 bytes) and unix socket paths (108)."""
    return hashlib.sha256(config.file_prefix.encode()).hexdigest()[:8]


def ovs_files(config: BackendConfig) -> OvsFiles:
    """The instance's private directory beside the vhost-user socket, in the run's
    directory on the node; OVS_RUNDIR is that directory itself, so a server-mode port's
    socket is the one the case names."""
    workdir = posixpath.dirname(config.socket)
    tag = instance_tag(config)
    return OvsFiles(private=f"{workdir}/ovs-{tag}", rundir=workdir, bridge=f"vlm{tag}")


def vhost_port(config: BackendConfig) -> str:
    """The guest's port name: a server-mode (`dpdkvhostuser`) port's socket is
    OVS_RUNDIR/<name>, so it is the socket's file name."""
    return VHOST_PORT if config.client else posixpath.basename(config.socket)


def devargs(nic: Nic, queues: int) -> str:
    """`dpdk-devargs` of the physical port: the PCI address, or an af_packet vdev."""
    if nic.pci:
        return nic.pci
    return f"net_af_packet0,iface={nic.interface},qpairs={queues}"


def dpdk_extra(config: BackendConfig) -> str:
    """EAL arguments OVS has no key for: the file prefix, PCI (only the port's, or none),
    the vhost library's log level."""
    args = [f"--file-prefix={config.file_prefix}"]
    args += ["-a", config.nic.pci] if config.nic.pci else ["--no-pci"]
    return " ".join([*args, VHOST_LOG_LEVEL])


def other_config(config: BackendConfig) -> dict[str, str | int]:
    """Open_vSwitch other_config for `config`, set before ovs-vswitchd starts."""
    pairs: dict[str, str | int] = {
        "dpdk-init": "true",
        "dpdk-extra": dpdk_extra(config),
        "dpdk-hugepage-dir": config.hugedir,
        "dpdk-socket-mem": OVS_MB,
        "dpdk-socket-limit": OVS_MB,
        # mempools sized by each port's queues (~50 MiB a port), not the shared default
        # of 262144 mbufs (~600 MiB) that OVS would halve down after each failure
        "per-port-memory": "true",
        "pmd-cpu-mask": PMD_CPU_MASK,
        "pmd-maxsleep": PMD_MAXSLEEP_US,
        "n-revalidator-threads": 1,
        "n-handler-threads": 1,
    }
    if config.postcopy:
        pairs["vhost-postcopy-support"] = "true"
    return pairs


def bridge_args(config: BackendConfig, files: OvsFiles) -> list[str]:
    """One ovs-vsctl transaction: the bridge, the physical port (OpenFlow port 2) and the
    guest's port (OpenFlow port 1)."""
    br, vhost = files.bridge, vhost_port(config)
    args = ["--", "add-br", br,
            "--", "set", "Bridge", br, "datapath_type=netdev", "fail_mode=secure",
            "--", "add-port", br, PHY_PORT,
            "--", "set", "Interface", PHY_PORT, "type=dpdk", "ofport_request=2",
            f"options:dpdk-devargs={ovsdb_value(devargs(config.nic, config.queues))}",
            f"options:n_rxq={config.queues}",
            "--", "add-port", br, vhost,
            "--", "set", "Interface", vhost, "ofport_request=1"]  # fmt: skip
    if config.client:
        args += [
            "type=dpdkvhostuserclient",
            f"options:vhost-server-path={ovsdb_value(config.socket)}",
        ]
    else:
        args += ["type=dpdkvhostuser"]
    return args


# what OVS cannot do that a case may need
LACKS = {FLOOD: "OVS-DPDK cannot send into the guest at full speed (a testpmd txonly flood)"}
# OVS registers only its dpdkvhostuserclient ports with RTE_VHOST_USER_POSTCOPY_SUPPORT
# (lib/netdev-dpdk.c, netdev_dpdk_vhost_client_reconfigure; netdev_dpdk_vhost_construct of
# a dpdkvhostuser port never sets it), so QEMU refuses postcopy-ram on a server-mode port:
# "vhost-user backend not capable of postcopy"
POSTCOPY_SERVER = (
    "OVS-DPDK offers postcopy only on dpdkvhostuserclient ports (lib/netdev-dpdk.c): "
    "run it with --vhost-mode client"
)


def unsupported(config: BackendConfig) -> str | None:
    """Why OVS-DPDK cannot be the backend of `config`, or None."""
    return OvsBackend.unsupported(config.needs)


class OvsBackend(VhostBackend):
    """A private OVS-DPDK per node and case."""

    program = "ovs-vswitchd"
    ready_re = re.compile(VHOST_READY_RE)
    lacks = LACKS
    hugepage_mb = OVS_MB
    package = OVS_PACKAGE

    def __init__(self, config: BackendConfig, tools: OvsTools | None = None) -> None:
        super().__init__(config)
        tools = tools or OvsTools()
        if config.binary:  # the node's ovs-vswitchd (`binary(tools)`), as the flow passes it
            tools = OvsTools(**{**tools.__dict__, "vswitchd": config.binary})
        self.tools = tools
        self.files = ovs_files(config)
        self.vhost_port = vhost_port(config)
        self.switch = OvsSwitch(config.name, config.node, config.rundir, self.files, tools)

    @classmethod
    def unsupported(cls, wanted: Iterable[str]) -> str | None:
        """As VhostBackend's, and postcopy only in client mode (POSTCOPY_SERVER)."""
        features = frozenset(wanted)
        if POSTCOPY in features and CLIENT not in features:
            return POSTCOPY_SERVER
        return super().unsupported(features)

    @classmethod
    def programs(cls, tools: Tools) -> dict[str, str]:
        """ovs-vswitchd with DPDK first, then ovsdb-server and the tools (OvsTools' defaults:
        the node's Tools name no OVS program)."""
        return OvsTools().programs()

    @property
    def process(self) -> NodeProcess:
        """The ovs-vswitchd process (ovsdb-server is `switch.db`)."""
        return self.switch.vswitchd

    def start(self) -> None:
        """Database, ovsdb-server, other_config, ovs-vswitchd up to DPDK's initialisation,
        then bridge and ports (ovs-vsctl returns once ovs-vswitchd applied them); a port
        that failed is a SetupError with OVS's error."""
        why = unsupported(self.config)
        if why:
            raise SetupError(why)
        sw = self.switch
        sw.create_db()
        sw.start_db()
        sw.configure(other_config(self.config))
        sw.start_vswitchd()
        sw.vsctl(*bridge_args(self.config, self.files), timeout=60)
        self._ports_up()
        self._record_config()

    def _ports_up(self) -> None:
        """Both ports have an OpenFlow port and no error (SetupError with OVS's error if
        not); then the PMD threads, which the ports' queues made, are niced."""
        ifaces = self.switch.interfaces()
        for name in (PHY_PORT, self.vhost_port):
            state = ifaces.get(name)
            if state is None or state.ofport < 0 or state.error:
                why = state.error if state is not None and state.error else "no OpenFlow port"
                raise SetupError(f"{self.config.name}: OVS port {name}: {why}")
        self.switch.pmd_threads_nice(PMD_NICE)

    def _halt(self) -> None:
        """ovs-vswitchd alone, as `systemctl restart` would stop it: ovsdb-server and the
        database (the bridge, its ports, other_config) stay, so the next ovs-vswitchd
        builds the same bridge and its client port connects to QEMU's socket again."""
        self.switch.stop_vswitchd()

    def _respawn(self) -> None:
        """A new ovs-vswitchd on the kept database, up to its bridge and ports; `forward`
        then adds the NORMAL flow again (OpenFlow flows are not in the database: ovs-ctl's
        restart saves and restores them, an SDN controller re-installs them)."""
        name = f"{self.config.name}-restart{self.restarts}"
        self.switch.restart_vswitchd(name, self.restarts)
        self._ports_up()

    def _record_config(self) -> None:
        """`ovs-vsctl show` and the Open_vSwitch row beside the logs, for a reader."""
        sw = self.switch
        text = sw.vsctl("show") + sw.vsctl("list", "Open_vSwitch", ".")
        path = self.config.rundir.log_path(f"{self.config.name}-ovs-config")
        path.write_text(text, encoding="utf-8")

    def forward(self) -> None:
        """The NORMAL flow: from now on the bridge learns and forwards."""
        self.switch.ofctl("add-flow", FLOW)

    def wait_guest_ready(self, timeout: float, since: int = 0) -> str:
        """The vhost library's "virtio is now ready for processing", in ovs-vswitchd's log."""
        return self.process.expect(VHOST_READY_RE, timeout, since)

    def counters(self, port: int = 0) -> PortStats:
        """Live datapath counters (`dpctl/show -s`) of the vhost port (0) or the physical
        port (1); rx_missed is OVS's rx "dropped" (imissed + rx_nombuf on a DPDK port). A vhost
        port with no guest has no live counters: then the Interface row's (OVS resets a
        vhost port's counters when its guest goes: all 0 after a migration away)."""
        name = self.vhost_port if port == 0 else PHY_PORT
        stats = self.switch.dp_stats().get(name)
        if stats is None:  # no guest on the vhost port: its last counters in the database
            row = self.switch.statistics(name)
            return PortStats(
                port=port,
                rx_packets=row.get("rx_packets", 0),
                rx_missed=row.get("rx_dropped", 0),
                rx_bytes=row.get("rx_bytes", 0),
                rx_errors=row.get("rx_errors", 0),
                tx_packets=row.get("tx_packets", 0),
                tx_errors=row.get("tx_errors", 0),
                tx_bytes=row.get("tx_bytes", 0),
            )
        return PortStats(
            port=port,
            rx_packets=stats.rx_packets,
            rx_missed=stats.rx_dropped,
            rx_bytes=stats.rx_bytes,
            rx_errors=stats.rx_errors,
            tx_packets=stats.tx_packets,
            tx_errors=stats.tx_errors,
            tx_bytes=stats.tx_bytes,
        )

    def statistics(self, port: int = 0) -> dict[str, int]:
        """Every counter of the Interface row (`ovs-vsctl get interface ... statistics`),
        as ovs-vswitchd last refreshed them (every 5 s)."""
        return self.switch.statistics(self.vhost_port if port == 0 else PHY_PORT)

    def stop(self) -> None:
        """ovs-vswitchd, then ovsdb-server: `exit` over their control sockets, then
        signals; the private directory (database, sockets) removed."""
        self.switch.stop()
        self.config.node.execute(["rm", "-rf", self.files.private])
