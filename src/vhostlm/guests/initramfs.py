"""vhostlm's own guest: a kernel and a busybox initramfs with DPDK's testpmd in it."""

from __future__ import annotations

from pathlib import Path

from vhostlm.apps.console import GuestShell
from vhostlm.apps.guest import KernelReceiver, Receiver, TestPmdReceiver
from vhostlm.apps.qemu import QemuVm
from vhostlm.guests.base import BootFiles, Driver, Guest
from vhostlm.guests.contract import READY_MARKER
from vhostlm.testbed.topology import Topology

PROMPT_TIMEOUT_S = 30.0


class InitramfsGuest(Guest):
    """Boots the cached initramfs; its init prints a ready marker, then a root shell."""

    kind = "initramfs"

    def boot_files(self, bed: Topology, role: str) -> BootFiles:
        """The kernel and initrd copied to (or found on) the role's node; the shared disk."""
        kernel, initrd = bed.guest_files(role)
        disk = bed.guest_disk()
        return BootFiles(Path(kernel), Path(initrd), Path(disk) if disk else None)

    def wait_shell(self, vm: QemuVm, timeout: float) -> GuestShell:
        """The ready marker within `timeout`, then the shell's prompt."""
        vm.console.output.expect(READY_MARKER, timeout, alive=vm.process.alive)
        shell = self.shell(vm)
        shell.wait_prompt(PROMPT_TIMEOUT_S)
        return shell

    def receiver(self, driver: Driver, probes: bool, queues: int) -> Receiver:
        """testpmd on the virtio PMD, or the kernel's virtio-net with its counter loop."""
        if driver is Driver.PMD:
            return TestPmdReceiver(probes)
        return KernelReceiver(probes, queues=queues)

    def start_dirty_load(self, shell: GuestShell, mb_s: int) -> str:
        """Rewrite a tmpfs file of `mb_s` MiB with non-zero data once a second (busybox's
        usleep)."""
        return start_dirty_load(shell, mb_s)


DIRTY_BYTE = "\\252"
"""The byte the dirtying load writes (octal, for tr): anything but zero. QEMU sends a page
of zeroes as a marker of a few bytes, so `dd if=/dev/zero` dirtied nothing it had to send."""


def dirty_load_fill(mb_s: int, where: str = "/dev/shm") -> str:
    """The shell command that writes the load's source once: `mb_s` MiB of DIRTY_BYTE in
    `where`/dirty.src (1 MiB made by tr, then copied: cheap even under TCG)."""
    chunk = f"{where}/dirty.1m"
    return (
        f"dd if=/dev/zero bs=1024 count=1024 2>/dev/null | tr '\\000' '{DIRTY_BYTE}' > {chunk}"
        f" && i=0 && while [ $i -lt {mb_s} ]; do cat {chunk}; i=$((i+1)); done "
        f"> {where}/dirty.src && rm -f {chunk}"
    )


def dirty_load_round(mb_s: int, where: str = "/dev/shm") -> str:
    """The shell command of one round: copy the source over the same `mb_s` MiB of
    `where`/dirty (in place, conv=notrunc), so every one of its pages is dirtied again."""
    return f"dd if={where}/dirty.src of={where}/dirty bs=1M count={mb_s} conv=notrunc 2>/dev/null"


def dirty_load_loop(mb_s: int, where: str = "/dev/shm", pause: str = "usleep 1000000") -> str:
    """The background loop: a round a second. The pause runs beside the round, not after
    it, so a slow copy (TCG) does not stretch the second: about `mb_s` MiB/s."""
    return f"(while :; do {pause} & {dirty_load_round(mb_s, where)}; wait; done) &"


def start_dirty_load(shell: GuestShell, mb_s: int) -> str:
    """Rewrite a tmpfs file of `mb_s` MiB with non-zero data once a second in the
    background: guest memory dirtied at about `mb_s` MiB/s for as long as the guest runs
    (it holds 2 x `mb_s` MiB: the source and the file rewritten); the commands, as run."""
    shell.run("mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm 2>/dev/null; true")
    fill, loop = dirty_load_fill(mb_s), dirty_load_loop(mb_s)
    shell.run(fill, timeout=60)
    shell.run(loop)
    return f"{fill}; {loop}"
