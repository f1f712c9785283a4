"""Choosing KVM or TCG by really booting the guest: KVM can exist and still hang.

On nested set-ups /dev/kvm answers but the guest spins in its kernel (LAB-FACTS), so
the probe boots the image under KVM with a timeout and falls back to TCG; the answer is
cached per QEMU binary and host kernel.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

from vhostlm.addresses import QEMU_BINARY
from vhostlm.errors import SetupError
from vhostlm.guests.contract import READY_MARKER
from vhostlm.image.cache import GuestImage
from vhostlm.nodes.base import Node
from vhostlm.nodes.local import LocalNode
from vhostlm.nodes.stream import ExpectTimeout
from vhostlm.rundir import RunDir


def probe_argv(kernel: str, initrd: str, binary: str = QEMU_BINARY) -> list[str]:
    """A minimal KVM boot of the guest image, its console on stdout."""
    return [
        binary, "-machine", "pc,accel=kvm", "-cpu", "host", "-m", "512M", "-smp", "1",
        "-kernel", kernel, "-initrd", initrd,
        "-append", "console=ttyS0 panic=-1 quiet", "-nodefaults", "-no-user-config",
        "-display", "none", "-serial", "stdio", "-no-reboot",
    ]  # fmt: skip


def boots_under_kvm(
    node: Node,
    kernel: str,
    initrd: str,
    rundir: RunDir,
    binary: str = QEMU_BINARY,
    timeout: float = 15.0,
) -> bool:
    """True when the guest reaches its ready marker under KVM on `node` within `timeout`."""
    if node.execute(["test", "-w", "/dev/kvm"]).status != 0:
        return False
    proc = node.process(f"kvm-probe-{node.name}", probe_argv(kernel, initrd, binary), rundir)
    try:
        proc.start()
        proc.expect(READY_MARKER, timeout)
        return True
    except (ExpectTimeout, SetupError):
        return False
    finally:
        proc.stop(timeout=2)


def _cache_key(image: GuestImage, binary: str) -> str:
    found = shutil.which(binary)
    qemu = Path(found) if found else Path(binary)
    mtime = int(qemu.stat().st_mtime) if qemu.exists() else 0
    return f"{platform.release()}|{qemu}|{mtime}|{image.digest[:16]}"


def probe_accel(
    image: GuestImage,
    rundir: RunDir,
    cache: Path,
    timeout: float = 15.0,
    binary: str = QEMU_BINARY,
) -> str:
    """ "kvm" when a guest really boots under KVM within `timeout`, else "tcg" (cached)."""
    forced = os.environ.get("VHOSTLM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = _cache_key(image, binary)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key and cached.get("accel") in ("kvm", "tcg"):
            return str(cached["accel"])
    except (OSError, ValueError):
        pass
    node = LocalNode("host")
    booted = boots_under_kvm(
        node, str(image.kernel), str(image.initrd), rundir, binary, timeout=timeout
    )
    accel = "kvm" if booted else "tcg"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "accel": accel}))
    return accel
