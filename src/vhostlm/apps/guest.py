"""What runs inside the guest: the two receivers of the seed plan over the serial console.

Each receiver prints a stream on the console while it runs (testpmd's `set verbose 1`
lines, or a counter loop for the kernel driver), so packets received before, during and
after the migration are read from the console text of the source and destination.
"""

from __future__ import annotations

import re
from typing import Protocol

from vhostlm.apps.console import SHELL_PROMPT, GuestShell
from vhostlm.apps.testpmd import PROMPT, count_verbose_rx
from vhostlm.errors import SetupError

RX_LINE_RE = re.compile(r"^RX (\d+)$", re.M)
FIND_NIC = (
    "for d in /sys/bus/pci/devices/*; do "
    'if [ "$(cat $d/vendor) $(cat $d/device)" = "0x1af4 0x1000" ]; then basename $d; fi; done'
)


class Receiver(Protocol):
    """A guest-side receiver started on the console; counts come from console text."""

    def start(self, shell: GuestShell) -> None:
        """Start receiving; leaves the receiver running in the foreground of the console."""

    def total(self, texts: list[str]) -> int:
        """Packets received in all, from console texts in time order (source, destination)."""

    def stop(self, shell: GuestShell) -> None:
        """Stop receiving and return to the shell prompt."""


def guest_nic_pci(shell: GuestShell) -> str:
    """PCI address of the guest's virtio-net device."""
    out = shell.run(FIND_NIC).split()
    if not out:
        raise SetupError("guest: no virtio-net PCI device found")
    return out[0]


class TestPmdReceiver:
    """The seed's step 7: testpmd in the guest on the virtio PMD, rxonly, verbose."""

    __test__ = False

    def __init__(self, lcores: str = "0-1") -> None:
        self.lcores = lcores
        self.commands: list[str] = []

    def start(self, shell: GuestShell) -> None:
        """Bind the device to uio_pci_generic and start testpmd as in the seed."""
        pci = guest_nic_pci(shell)
        for cmd in (
            f"echo {pci} > /sys/bus/pci/drivers/virtio-pci/unbind",
            "echo 1af4 1000 > /sys/bus/pci/drivers/uio_pci_generic/new_id",
        ):
            self.commands.append(cmd)
            shell.run(cmd)
        argv = f"dpdk-testpmd -l {self.lcores} -n 4 --iova-mode=pa -- -i"
        self.commands.append(argv)
        mark = shell.console.output.mark()
        shell.console.write(argv + "\n")
        pattern = f"{re.escape(PROMPT)}|{re.escape(SHELL_PROMPT)}"
        if shell.console.output.expect(pattern, 120, since=mark).group(0) != PROMPT:
            lines = shell.console.output.since(mark).strip().splitlines()
            why = next((ln for ln in reversed(lines) if "EAL: Error" in ln or "Cause" in ln), "")
            raise SetupError(f"guest testpmd exited: {why or lines[-2:]}")
        for cmd in ("set fwd rxonly", "set verbose 1", "start tx_first"):
            self.commands.append(cmd)
            mark = shell.console.output.mark()
            shell.console.write(cmd + "\n")
            shell.console.output.expect(re.escape(PROMPT), 30, since=mark)

    def total(self, texts: list[str]) -> int:
        """Sum of `port 0/queue 0: received N packets` lines over all texts."""
        return sum(count_verbose_rx(text, 0) for text in texts)

    def stop(self, shell: GuestShell) -> None:
        """Quit testpmd."""
        shell.console.write("stop\nquit\n")
        shell.wait_prompt(30)


class KernelReceiver:
    """The seed's virtio-net case: link up, the interface's rx counter printed in a loop."""

    def __init__(self, interval_us: int = 100000) -> None:
        self.interval_us = interval_us
        self.commands: list[str] = []
        self.iface = "eth0"

    def start(self, shell: GuestShell) -> None:
        """Bring the link up and print `RX <rx_packets>` continuously."""
        self.iface = shell.run(
            f"ls /sys/bus/pci/devices/{guest_nic_pci(shell)}/virtio*/net"
        ).split()[0]
        up = f"ip link set {self.iface} up"
        self.commands.append(up)
        shell.run(up)
        loop = (
            f"while :; do echo RX $(cat /sys/class/net/{self.iface}/statistics/rx_packets); "
            f"usleep {self.interval_us}; done"
        )
        self.commands.append(loop)
        mark = shell.console.output.mark()
        shell.console.write(loop + "\n")
        shell.console.output.expect(RX_LINE_RE, 10, since=mark)

    def total(self, texts: list[str]) -> int:
        """The last counter value printed (the counter migrates with the guest)."""
        values = [v for text in texts for v in RX_LINE_RE.findall(text)]
        return int(values[-1]) if values else 0

    def stop(self, shell: GuestShell) -> None:
        """Interrupt the loop."""
        shell.console.write("\x03")
        shell.wait_prompt(10)
