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

GUEST_HUGEPAGES = 256
"""2 MiB hugepages the guest kernel reserves at boot (`hugepages=` on its command line), for
the testpmd in the guest: 512 MiB of its RAM that nothing else can use."""

GUEST_BASE_MB = 192
"""What the guest needs besides them: its kernel, the unpacked initramfs, testpmd."""


DISK_BASE_MB = 448
"""What a distro guest (--guest-image) needs besides the hugepages its PMD cases reserve:
systemd, the distro's kernel and page cache, and a testpmd that loads every one of Debian's
shared PMD libraries. With the checker at 256 MiB of a 1 GiB Debian guest, the guest's
testpmd was killed as it started (its login session ended); at 64 MiB it passes."""


def memcheck_room_mb(guest_mem_mb: int, base_mb: int = GUEST_BASE_MB) -> int:
    """The most guest RAM the memory checker can own: what is left of `guest_mem_mb` after
    the hugepages and the guest's own needs, `base_mb` (0 or less: none)."""
    return guest_mem_mb - 2 * GUEST_HUGEPAGES - base_mb
