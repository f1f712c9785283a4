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
