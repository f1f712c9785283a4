"""What the guest's /init (vhostlm/image/init.sh) promises the host side, kept in one place.

Change a value only together with init.sh (a changed init.sh changes the image's cache key).
"""

from __future__ import annotations

from pathlib import PurePosixPath

READY_MARKER = "VHOSTLM-GUEST-READY"
"""/init prints this, then the kernel version, when the guest is ready."""

PROMPT = "vhostlm-guest# "
"""PS1 of the guest's root shell on ttyS0."""

MODULE_LIST = PurePosixPath("/etc/vhostlm/modules")
"""The kernel modules /init loads, one name a line, in load order; the image builder writes it."""

VERBOSE_OPTION = "vhostlm.verbose"
"""Kernel command-line word that keeps kernel messages on the console (else /init quiets them)."""

PMD_HUGEPAGES = 16
"""2 MiB hugepages the guest reserves for its testpmd, at run time, just before it starts
(`/proc/sys/vm/nr_hugepages`), in a virtio-pmd case only: a kernel-driver case reserves
none. Its testpmd (GUEST_TESTPMD_MB, GUEST_TESTPMD_MBUFS) ran in 10 pages here and failed
in 8 (its mbuf pool: "Cannot allocate memory"); 16 leave room beside the EAL's -m. The
guest used to reserve 256 at boot in every case: 512 MiB of its RAM that nothing else could
use (a 512 MiB guest panicked), which its testpmd's default mbuf pool (155,456 mbufs, sized
for 32 ports) filled, so a virtio-pmd migration sent them all."""

GUEST_TESTPMD_MB: int | None = 24
"""testpmd's hugepage memory in the guest (EAL `-m`), within PMD_HUGEPAGES."""

GUEST_TESTPMD_MBUFS: int | None = 2048
"""The guest testpmd's mbuf pool (`--total-num-mbufs`; testpmd wants more than 1024): its
one queue pair's rx and tx rings (256 descriptors each) and two lcores' caches, as the
vhost side's TESTPMD_MBUFS bounds its own pool."""

GUEST_BASE_MB = 192
"""What the guest needs besides hugepages: its kernel, the unpacked initramfs, testpmd."""


DISK_HUGEPAGES = 256
"""2 MiB hugepages a distro guest (--guest-image) reserves at run time for its own testpmd
(Debian's, with its default mbuf pool)."""

DISK_BASE_MB = 448
"""What a distro guest (--guest-image) needs besides the hugepages its PMD cases reserve:
systemd, the distro's kernel and page cache, and a testpmd that loads every one of Debian's
shared PMD libraries. With the checker at 256 MiB of a 1 GiB Debian guest, the guest's
testpmd was killed as it started (its login session ended); at 64 MiB it passes."""


def guest_hugepages(pmd: bool, disk: bool = False) -> int:
    """2 MiB hugepages the guest reserves in a case: for its testpmd when `pmd` (the
    virtio-pmd driver), none for the kernel's virtio-net; `disk`: a distro guest."""
    if not pmd:
        return 0
    return DISK_HUGEPAGES if disk else PMD_HUGEPAGES


def memcheck_room_mb(
    guest_mem_mb: int, base_mb: int = GUEST_BASE_MB, hugepages: int = PMD_HUGEPAGES
) -> int:
    """The most guest RAM the memory checker can own: what is left of `guest_mem_mb` after
    `hugepages` 2 MiB pages and the guest's own needs, `base_mb` (0 or less: none)."""
    return guest_mem_mb - 2 * hugepages - base_mb


TOOLS_SERIAL = "vhostlm-tools"
"""The virtio-blk serial of the drive with vhostlm's own programs for a user's image
(guests.tools): how the guest finds it, in /sys/block/vd*/serial."""
