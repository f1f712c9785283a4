"""The guest interface: how a kind of guest boots, gives a shell, and drives its NIC.

The flow asks a `Guest` for what QEMU boots on a role's node, waits through it for a
shell on the serial console, and gets from it the receiver of the case's driver (the
kernel's virtio-net or DPDK's virtio PMD in the guest). vhostlm's own initramfs is the
first implementation; each new kind (a user's disk image) is one module beside it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from vhostlm.apps.console import GuestShell
from vhostlm.apps.guest import Receiver
from vhostlm.apps.qemu import QemuVm
from vhostlm.rundir import RunDir
from vhostlm.testbed.topology import Topology


class Driver(StrEnum):
    """What drives the guest's virtio device."""

    PMD = "virtio_pmd"  # DPDK's virtio PMD: testpmd in the guest
    NET = "virtio_net"  # the guest kernel's virtio-net


@dataclass(frozen=True)
class BootFiles:
    """What QEMU boots on one node: a kernel and initrd (vhostlm's image), or a boot disk
    with its own bootloader (a user's image); and a shared data disk if there is one."""

    kernel: Path | None
    initrd: Path | None
    disk: Path | None = None
    boot_disk: Path | None = None  # a qcow2 overlay, booted through its bootloader
    tools_disk: Path | None = None  # vhostlm's programs for a user's image (guests.tools)


class Guest(ABC):
    """A kind of guest: its boot, its shell, its drivers."""

    kind = ""  # as a case spec names it

    def prepare(self, bed: Topology, rundir: RunDir, stack: ExitStack) -> None:  # noqa: B027
        """Make what the case's QEMUs boot (undone by `stack`); most guests have nothing to do."""

    @abstractmethod
    def boot_files(self, bed: Topology, role: str) -> BootFiles:
        """What the role's QEMU boots."""

    def shell(self, vm: QemuVm) -> GuestShell:
        """The shell on `vm`'s console, without waiting: the incoming twin's, which takes
        over the source's shell state with the migration."""
        return GuestShell(vm.console)

    @abstractmethod
    def wait_shell(self, vm: QemuVm, timeout: float) -> GuestShell:
        """Wait until the booted guest gives a shell on its console (SetupError if not)."""

    @abstractmethod
    def receiver(self, driver: Driver, probes: bool, queues: int) -> Receiver:
        """The guest side of a case with `driver` (answering probes when `probes`)."""

    @abstractmethod
    def start_dirty_load(self, shell: GuestShell, mb_s: int) -> str:
        """Dirty about `mb_s` MiB of guest memory a second, in the background; the command."""
