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
        """Rewrite a tmpfs file of `mb_s` MiB once a second (busybox's usleep)."""
        return start_dirty_load(shell, mb_s)


def start_dirty_load(shell: GuestShell, mb_s: int) -> str:
    """Rewrite a tmpfs file of `mb_s` MiB once a second in the background: guest memory
    dirtied at about `mb_s` MiB/s for as long as the guest runs."""
    cmd = (
        f"(while :; do dd if=/dev/zero of=/dev/shm/dirty bs=1M count={mb_s} conv=notrunc "
        "2>/dev/null; usleep 1000000; done) &"
    )
    shell.run("mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm 2>/dev/null; true")
    shell.run(cmd)
    return cmd
