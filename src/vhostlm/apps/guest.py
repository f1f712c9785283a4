"""What runs inside the guest: the receivers of the plan, driven over the serial console.

A receiver starts the guest side of a case (testpmd on the virtio PMD, or the kernel's
virtio-net) and reads the guest's own receive counter. Counters live in guest memory, so
they migrate with the guest: read on the source before and during the migration, on the
destination after it.
"""

from __future__ import annotations

import re
from typing import Protocol

from vhostlm.addresses import GUEST_IP, PREFIX_LEN
from vhostlm.apps.console import SHELL_PROMPT, GuestShell
from vhostlm.apps.testpmd import PROMPT, STATS_RE
from vhostlm.errors import SetupError
from vhostlm.guests.contract import GUEST_TESTPMD_MB, GUEST_TESTPMD_MBUFS, PMD_HUGEPAGES
from vhostlm.wait import Deadline, WaitTimeout, wait_until

RX_LINE_RE = re.compile(r"^RX (\d+)\n", re.M)  # whole lines only: output arrives in pieces
FIND_NIC = (
    "for d in /sys/bus/pci/devices/*; do "
    'if [ "$(cat $d/vendor) $(cat $d/device)" = "0x1af4 0x1000" ]; then basename $d; fi; done'
)


CRASH_RE = re.compile(
    r"^.*(?:BUG: .*|Oops: .*|invalid opcode: .*|Kernel panic - .*|general protection fault.*)$",
    re.M,
)


def guest_crash(text: str) -> str | None:
    """The first line of a guest kernel crash in console `text`, if there is one."""
    match = CRASH_RE.search(text)
    return match.group(0).strip() if match else None


class Receiver(Protocol):
    """The guest side of a case."""

    commands: list[str]

    def start(self, shell: GuestShell) -> None:
        """Start receiving (and answering probes when `probes` is set)."""

    def count(self, shell: GuestShell, timeout: float = 10.0) -> int:
        """The guest's receive counter now, read on the console of `shell`."""

    def wait_count(self, shell: GuestShell, minimum: int, timeout: float) -> int | None:
        """Wait until the counter reaches `minimum`; its value, or None on timeout."""


def guest_nic_pci(shell: GuestShell) -> str:
    """PCI address of the guest's virtio-net device."""
    out = shell.run(FIND_NIC).split()
    if not out:
        raise SetupError("guest: no virtio-net PCI device found")
    return out[0]


class TestPmdReceiver:
    """testpmd in the guest on the virtio PMD (the seed's step 7).

    Seed form: `set fwd rxonly`, `set verbose 1`, `start tx_first`. With probes:
    `set fwd icmpecho`, `set verbose 0`, `start`, so the guest answers every probe.
    """

    __test__ = False
    # a distro's getty prompting again: the shell testpmd ran in has gone
    SESSION_ENDED = r"\n[\w.-]+ login: "

    # what the guest reserves for its testpmd, and what that testpmd takes of it (EAL -m,
    # its mbuf pool): see guests.contract; None: testpmd's own default
    hugepages: int = PMD_HUGEPAGES
    mem_mb: int | None = GUEST_TESTPMD_MB
    mbufs: int | None = GUEST_TESTPMD_MBUFS

    def __init__(self, probes: bool, lcores: str = "0-1") -> None:
        self.probes = probes
        self.lcores = lcores
        self.commands: list[str] = []

    def testpmd_command(self) -> str:
        """The guest's testpmd command line: the seed's, with its memory sized."""
        eal = f" -m {self.mem_mb}" if self.mem_mb else ""
        app = f" --total-num-mbufs={self.mbufs}" if self.mbufs else ""
        return f"dpdk-testpmd -l {self.lcores} -n 4 --iova-mode=pa{eal} -- -i{app}"

    def reserve_hugepages(self, shell: GuestShell) -> None:
        """Reserve `hugepages` 2 MiB pages in the guest, at run time: only a virtio-pmd case
        needs them. SetupError when the guest's kernel could not find them all."""
        cmd = f"echo {self.hugepages} > /proc/sys/vm/nr_hugepages"
        self.commands.append(cmd)
        shell.run(cmd, timeout=60)
        got = shell.run("cat /proc/sys/vm/nr_hugepages").strip().split()
        if not got or got[-1] != str(self.hugepages):
            raise SetupError(
                f"the guest reserved {got[-1] if got else 'no'} of the {self.hugepages} "
                "2 MiB hugepages its testpmd needs: give the guest more --guest-mem, or its "
                "checker less --memcheck-mb"
            )

    def _type(self, shell: GuestShell, line: str) -> int:
        self.commands.append(line)
        mark = shell.console.output.mark()
        shell.console.write(line + "\n")
        return mark

    def start(self, shell: GuestShell) -> None:
        """Reserve its hugepages, bind the device to uio_pci_generic and start testpmd."""
        self.reserve_hugepages(shell)
        pci = guest_nic_pci(shell)
        for cmd in (
            f"echo {pci} > /sys/bus/pci/drivers/virtio-pci/unbind",
            "echo 1af4 1000 > /sys/bus/pci/drivers/uio_pci_generic/new_id",
        ):
            self.commands.append(cmd)
            shell.run(cmd)
        mark = self._type(shell, self.testpmd_command())
        pattern = f"{re.escape(PROMPT)}|{re.escape(SHELL_PROMPT)}|{self.SESSION_ENDED}"
        found = shell.console.output.expect(pattern, 120, since=mark).group(0)
        if found.endswith("login: "):
            raise SetupError(
                "the guest's login session ended as its testpmd started (killed: out of "
                "memory?): give the guest more --guest-mem, or its checker less --memcheck-mb"
            )
        if found != PROMPT:
            lines = shell.console.output.since(mark).strip().splitlines()
            why = next((ln for ln in reversed(lines) if "EAL: Error" in ln or "Cause" in ln), "")
            raise SetupError(f"guest testpmd exited: {why or lines[-2:]}")
        if self.probes:
            script = ("set fwd icmpecho", "set verbose 0", "start")
        else:
            script = ("set fwd rxonly", "set verbose 1", "start tx_first")
        for cmd in script:
            mark = self._type(shell, cmd)
            shell.console.output.expect(re.escape(PROMPT), 30, since=mark)

    def count(self, shell: GuestShell, timeout: float = 10.0) -> int:
        """RX-packets of port 0 from `show port stats 0`."""
        mark = self._type(shell, "show port stats 0")
        match = shell.console.output.expect(STATS_RE, timeout, since=mark)
        return int(match["rx"])

    def wait_count(self, shell: GuestShell, minimum: int, timeout: float) -> int | None:
        """Read the counter every 0.2 s until it reaches `minimum` (testpmd prints it only
        when asked: there is no event to wait on)."""
        deadline = Deadline(timeout)

        def reached() -> tuple[int] | None:  # a tuple: a counter of 0 can be the answer
            value = self.count(shell, max(1.0, deadline.left()))
            return (value,) if value >= minimum else None

        try:
            return wait_until(reached, timeout, what="guest rx counter", interval=0.2)[0]
        except WaitTimeout:
            return None


class KernelReceiver:
    """The guest kernel's virtio-net: link up, the rx counter printed in a loop.

    With probes the interface also gets GUEST_IP, so the kernel answers ICMP echo.
    """

    def __init__(
        self, probes: bool, queues: int = 1, interval_us: int = 100000, pause: str | None = None
    ) -> None:
        """`pause`: the command the counter loop waits with (default busybox's usleep)."""
        self.probes = probes
        self.queues = queues
        self.interval_us = interval_us
        self.pause = pause or f"usleep {interval_us}"
        self.commands: list[str] = []
        self.iface = "eth0"

    def start(self, shell: GuestShell) -> None:
        """Bring the link up and print `RX <rx_packets>` continuously."""
        self.iface = shell.run(f"ls /sys/bus/pci/devices/{guest_nic_pci(shell)}/virtio*/net")
        self.iface = self.iface.split()[0]
        setup = [f"ip link set {self.iface} up"]
        if self.queues > 1:
            # the kernel enables one queue pair per vCPU; the tester's flow may hash to
            # another one, where nothing would be received
            setup.append(self.set_queues_command(self.queues))
        if self.probes:
            setup.append(f"ip addr add {GUEST_IP}/{PREFIX_LEN} dev {self.iface}")
        for cmd in setup:
            self.commands.append(cmd)
            shell.run(cmd)
        # in the background, so the shell stays free for commands during the migration
        loop = (
            f"(while :; do echo RX $(cat /sys/class/net/{self.iface}/statistics/rx_packets); "
            f"{self.pause}; done) &"
        )
        self.commands.append(loop)
        # no terminal echo from now on: the loop's lines would split the echoed commands
        shell.run("stty -echo")
        mark = shell.console.output.mark()
        shell.run(loop)
        shell.console.output.expect(RX_LINE_RE, 10, since=mark)

    def set_queues_command(self, queues: int) -> str:
        """The ethtool command that sets the interface's queue pairs."""
        return f"ethtool -L {self.iface} combined {queues}"

    def set_queues(
        self, shell: GuestShell, queues: int, moving_to: GuestShell | None = None
    ) -> str:
        """Set the queue pairs; SetupError naming what ethtool printed, if anything.

        `moving_to`: the destination's shell while a migration may switch the guest over.
        """
        cmd = self.set_queues_command(queues)
        out = shell.run(cmd, moving_to=moving_to)
        printed = RX_LINE_RE.sub("", out + "\n").strip()  # the counter loop prints too
        if printed:
            raise SetupError(f"{cmd} printed: {printed[:200]}")
        return cmd

    @staticmethod
    def _last(text: str) -> int | None:
        values = RX_LINE_RE.findall(text)
        return int(values[-1]) if values else None

    def count(self, shell: GuestShell, timeout: float = 10.0) -> int:
        """The last counter value the loop printed on this console."""
        out = shell.console.output
        if not out.wait_for(lambda t: self._last(t) is not None, timeout):
            crash = guest_crash(out.text())
            if crash is not None:
                raise SetupError(f"{out.name}: the guest kernel crashed: {crash}")
            raise SetupError(f"{out.name}: the guest printed no rx counter in {timeout:.0f} s")
        value = self._last(out.text())
        assert value is not None
        return value

    def wait_count(self, shell: GuestShell, minimum: int, timeout: float) -> int | None:
        """Wait until the printed counter reaches `minimum`."""
        out = shell.console.output
        if out.wait_for(lambda t: (self._last(t) or 0) >= minimum, timeout):
            return self._last(out.text())
        return None
