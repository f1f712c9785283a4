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


def memcheck_room_mb(guest_mem_mb: int) -> int:
    """The most guest RAM the memory checker can own: what is left of `guest_mem_mb` after
    the boot-time hugepages and the guest's own needs (0 or less: none)."""
    return guest_mem_mb - 2 * GUEST_HUGEPAGES - GUEST_BASE_MB
