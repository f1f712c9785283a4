"""Choosing KVM or TCG by really booting the guest: KVM can exist and still hang.

On nested set-ups /dev/kvm answers but the guest spins in its kernel (LAB-FACTS), so
the probe boots the image under KVM with a timeout and falls back to TCG; the answer is
cached per QEMU binary and host kernel.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from vhostlm.apps.process import Process
from vhostlm.apps.qemu import QEMU_BINARY
from vhostlm.apps.stream import ExpectTimeout
from vhostlm.errors import SetupError
from vhostlm.image.build import READY_MARKER, GuestImage
from vhostlm.rundir import RunDir


def probe_argv(image: GuestImage, binary: str = QEMU_BINARY) -> list[str]:
    """A minimal KVM boot of the guest image, its console on stdout."""
    return [
        binary, "-machine", "pc,accel=kvm", "-cpu", "host", "-m", "512M", "-smp", "1",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", "console=ttyS0 panic=-1 quiet", "-nodefaults", "-no-user-config",
        "-display", "none", "-serial", "stdio", "-no-reboot",
    ]  # fmt: skip


def _cache_key(image: GuestImage) -> str:
    qemu = Path(f"/usr/bin/{QEMU_BINARY}")
    mtime = int(qemu.stat().st_mtime) if qemu.exists() else 0
    return f"{platform.release()}|{mtime}|{image.digest[:16]}"


def probe_accel(image: GuestImage, rundir: RunDir, cache: Path, timeout: float = 15.0) -> str:
    """ "kvm" when a guest really boots under KVM within `timeout`, else "tcg" (cached)."""
    forced = os.environ.get("VHOSTLM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = _cache_key(image)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key and cached.get("accel") in ("kvm", "tcg"):
            return str(cached["accel"])
    except (OSError, ValueError):
        pass
    proc = Process("kvm-probe", probe_argv(image), rundir)
    try:
        proc.start()
        proc.expect(READY_MARKER, timeout)
        accel = "kvm"
    except (ExpectTimeout, SetupError):
        accel = "tcg"
    finally:
        proc.stop(timeout=2)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "accel": accel}))
    return accel
