"""DPDK's testpmd as the vhost-user backend (the seed's): net_vhost0 and a physical port."""

from __future__ import annotations

import re

from vhostlm.apps.testpmd import VHOST_READY_RE, PortStats, TestPmd, testpmd_argv
from vhostlm.backends.base import BackendConfig, VhostBackend
from vhostlm.nodes.base import NodeProcess
from vhostlm.testbed.topology import Tools

TESTPMD_MB = 128  # hugepage memory of each vhost testpmd
TESTPMD_MBUFS = 16384  # testpmd's default pool would take ~600 MiB of hugepages
LCORES = "0-1"
# the vhost library's messages (its "virtio is now ready for processing." among them) at
# INFO, DPDK 22.11's default for lib.vhost.config, said explicitly: the outage breakdown
# times the destination's ready moment by that line
VHOST_LOG_LEVEL = "--log-level=lib.vhost.config:info"


def vhost_argv(config: BackendConfig) -> list[str]:
    """testpmd's command line for `config`: the vhost port first, the physical port second."""
    vhost = f"net_vhost0,iface={config.socket},queues={config.queues}"
    if config.postcopy:
        vhost += ",postcopy-support=1"
    if config.client:  # QEMU listens; DPDK's vhost client reconnects when it goes away
        vhost += ",client=1"
    app = [f"--total-num-mbufs={TESTPMD_MBUFS}"]
    if config.postcopy:
        # testpmd's mlockall() pre-faults its mapping of guest memory, so the destination
        # QEMU's UFFDIO_COPY of a postcopy page finds it present (EEXIST) and the migration
        # pauses: DPDK's vhost guide says an application that pre-faults guest memory must
        # not enable postcopy support
        app.append("--no-mlockall")
    if config.queues > 1:
        app += [f"--rxq={config.queues}", f"--txq={config.queues}"]
    vdevs, eal = config.nic.testpmd_ports(config.queues)
    return testpmd_argv(
        config.binary,
        LCORES,
        [vhost, *vdevs],
        file_prefix=config.file_prefix,
        huge_dir=config.hugedir,
        mem_mb=TESTPMD_MB,
        app_args=app,
        eal_extra=[*eal, VHOST_LOG_LEVEL],
        no_pci=config.nic.pci is None,
    )


class TestpmdBackend(VhostBackend):
    """testpmd in interactive mode; its forwarding lcores polled at low priority."""

    __test__ = False
    program = "testpmd"
    ready_re = re.compile(VHOST_READY_RE)
    hugepage_mb = TESTPMD_MB
    package = "dpdk-dev"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.app = TestPmd(config.name, vhost_argv(config), config.rundir, config.node)

    @classmethod
    def programs(cls, tools: Tools) -> dict[str, str]:
        """testpmd, as the node's Tools name it."""
        return {"testpmd": tools.testpmd}

    @property
    def process(self) -> NodeProcess:
        """The testpmd process."""
        return self.app.process

    def start(self) -> None:
        """Start testpmd up to its prompt."""
        self.app.start(low_priority_polling=True)

    def forward(self) -> None:
        """testpmd's `start`: io forwarding between the ports; for a flood, txonly on the
        vhost port alone (the physical port neither sends nor forwards)."""
        if self.config.flood:
            for command in ("set portlist 0", "set fwd txonly"):
                self.app.cmd(command)
        self.app.cmd("start")

    def wait_guest_ready(self, timeout: float, since: int = 0) -> str:
        """The vhost PMD's "virtio is now ready for processing"."""
        return self.app.wait_vhost_ready(timeout, since)

    def counters(self, port: int = 0) -> PortStats:
        """`show port stats`."""
        return self.app.port_stats(port)

    def stop(self) -> None:
        """`quit`, then signals."""
        self.app.stop()

    def _halt(self) -> None:
        """`quit` (its vhost socket closes: QEMU sees the backend go)."""
        self.app.stop()

    def _respawn(self) -> None:
        """The same command line as a new testpmd (its own log, `<name>-restartN`) up to
        its prompt; with `client=1` it connects to QEMU's socket as it starts."""
        config = self.config
        name = f"{config.name}-restart{self.restarts}"
        self.app = TestPmd(name, vhost_argv(config), config.rundir, config.node)
        self.start()
