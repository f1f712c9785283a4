"""Driver of DPDK's interactive testpmd: command line, commands, parsed statistics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from vhostlm.nodes.base import Node
from vhostlm.rundir import RunDir

PROMPT = "testpmd> "
VHOST_READY_RE = r"virtio is now ready for processing"
STATS_RE = re.compile(
    r"NIC statistics for port (?P<port>\d+).*?"
    r"RX-packets:\s*(?P<rx>\d+)\s+RX-missed:\s*(?P<rx_missed>\d+)\s+RX-bytes:\s*(?P<rx_bytes>\d+)"
    r".*?RX-errors:\s*(?P<rx_errors>\d+)"
    r".*?TX-packets:\s*(?P<tx>\d+)\s+TX-errors:\s*(?P<tx_errors>\d+)\s+TX-bytes:\s*(?P<tx_bytes>\d+)\s*\n",
    re.S,
)
VERBOSE_RX_RE = re.compile(r"port (\d+)/queue (\d+): received (\d+) packets")


@dataclass(frozen=True)
class PortStats:
    """Counters of one port from `show port stats N`."""

    port: int
    rx_packets: int
    rx_missed: int
    rx_bytes: int
    rx_errors: int
    tx_packets: int
    tx_errors: int
    tx_bytes: int


def parse_port_stats(text: str) -> PortStats:
    """Parse the block `show port stats N` prints; ValueError if it is not there."""
    match = STATS_RE.search(text)
    if match is None:
        raise ValueError(f"no port statistics in testpmd output: {text[-200:]!r}")
    return PortStats(
        port=int(match["port"]),
        rx_packets=int(match["rx"]),
        rx_missed=int(match["rx_missed"]),
        rx_bytes=int(match["rx_bytes"]),
        rx_errors=int(match["rx_errors"]),
        tx_packets=int(match["tx"]),
        tx_errors=int(match["tx_errors"]),
        tx_bytes=int(match["tx_bytes"]),
    )


def testpmd_argv(
    binary: str,
    lcores: str,
    vdevs: Sequence[str],
    file_prefix: str | None = None,
    huge_dir: str | None = None,
    mem_mb: int | None = None,
    no_pci: bool = True,
    eal_extra: Sequence[str] = (),
    app_args: Sequence[str] = (),
) -> list[str]:
    """Build a testpmd command line (EAL arguments, `--`, interactive application arguments)."""
    argv = [binary, "-l", lcores, "-n", "4"]
    if no_pci:
        argv.append("--no-pci")
    if file_prefix:
        argv += ["--file-prefix", file_prefix]
    if huge_dir:
        argv += ["--huge-dir", huge_dir]
    if mem_mb:
        argv += ["-m", str(mem_mb)]
    for vdev in vdevs:
        argv += ["--vdev", vdev]
    argv += list(eal_extra)
    return [*argv, "--", "-i", *app_args]


class TestPmd:
    """An interactive testpmd process: send a command, read its output up to the prompt."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, argv: Sequence[str], rundir: RunDir, node: Node) -> None:
        self.name = name
        self.node = node
        self.process = node.process(name, argv, rundir)

    def start(self, timeout: float = 60.0, low_priority_polling: bool = False) -> TestPmd:
        """Start testpmd and wait for its first prompt.

        With `low_priority_polling` its busy-polling worker lcores run at nice 19: on a small
        machine they then take little CPU from QEMU, yet still run now and then. (At
        SCHED_IDLE they starved while holding a vring lock the vhost thread needed, so QEMU
        waited for a vhost-user reply with its main loop blocked and the guest froze.)
        """
        self.process.start()
        self.process.expect(re.escape(PROMPT), timeout)
        if low_priority_polling:
            self.worker_threads_nice(19)
        return self

    def worker_threads_nice(self, nice: int) -> int:
        """Set the nice value of the forwarding lcore threads; return how many were changed."""
        tasks = self.node.run(["ps", "-L", "-o", "tid=,comm=", "-p", str(self.process.pid)])
        tids = [
            line.split()[0]
            for line in tasks.splitlines()
            if len(line.split()) > 1 and line.split()[1].startswith("lcore-worker")
        ]
        if tids:
            self.node.run(["renice", "-n", str(nice), "-p", *tids])
        return len(tids)

    def cmd(self, command: str, timeout: float = 15.0) -> str:
        """Run one testpmd command and return what it printed before the next prompt."""
        mark = self.process.output.mark()
        self.process.send(command)
        match = self.process.output.expect(
            re.escape(PROMPT), timeout, since=mark, alive=self.process.alive
        )
        return self.process.output.text()[mark : match.start()]

    def port_stats(self, port: int = 0) -> PortStats:
        """Counters of `port`."""
        return parse_port_stats(self.cmd(f"show port stats {port}"))

    def wait_vhost_ready(self, timeout: float, since: int = 0) -> str:
        """Wait for the vhost library to report a guest's virtio device ready."""
        return self.process.expect(VHOST_READY_RE, timeout, since)

    def stop(self) -> int | None:
        """Quit testpmd politely, then by signal."""
        if self.process.alive():
            try:
                self.process.send("quit")
                if self.process.wait(5) is not None:
                    return self.process.stop()
            except OSError:
                pass
        return self.process.stop()
