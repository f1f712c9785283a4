"""The guest kernel: vmlinuz and the virtio/uio modules, unpacked from the linux-image .deb."""

from __future__ import annotations

import gzip
import lzma
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vhostlm.errors import SetupError
from vhostlm.guests.contract import MODULE_LIST
from vhostlm.image.host import last_line

MODULES: tuple[str, ...] = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "uio",
    "uio_pci_generic",
)
"""Guest kernel modules, in the order /init loads them (dependencies first)."""


def _module_pattern(mod: str) -> str:
    """tar wildcard matching a module file anywhere in the package (.ko or compressed)."""
    return "*/" + mod.replace("_", "[_-]") + ".ko*"


@dataclass(frozen=True)
class Kernel:
    """What the image needs from the unpacked kernel package."""

    version: str
    vmlinuz: Path
    modules: dict[str, Path]
    builtin: frozenset[str]


def extract_kernel(deb: Path, dest: Path) -> Kernel:
    """Unpack (dpkg-deb + tar, like dpkg -x) only vmlinuz and the wanted modules of the .deb."""
    dest.mkdir(parents=True, exist_ok=True)
    patterns = ["./boot/vmlinuz-*", "*/modules/*/modules.builtin"]
    patterns += [_module_pattern(m) for m in MODULES]
    cmd = (
        f"dpkg-deb --fsys-tarfile {_quote(deb)} | "
        f"tar -x -C {_quote(dest)} --wildcards {' '.join(_quote(p) for p in patterns)}"
    )
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, check=False
    )
    kernels = sorted((dest / "boot").glob("vmlinuz-*"))
    # tar exits 2 when a pattern matched nothing (a module built in); only vmlinuz matters.
    if not kernels:
        raise SetupError(
            f"no /boot/vmlinuz-* unpacked from {deb}: {last_line(proc)} "
            "(delete the .deb to download it again)"
        )
    vmlinuz = kernels[-1]
    version = vmlinuz.name[len("vmlinuz-") :]
    modules: dict[str, Path] = {}
    builtin: set[str] = set()
    for path in sorted(dest.rglob("*.ko*")):
        key = path.name.split(".ko")[0].replace("-", "_")
        modules.setdefault(key, path)
    for listing in dest.rglob("modules.builtin"):
        for line in listing.read_text().splitlines():
            builtin.add(Path(line.strip()).name.split(".ko")[0].replace("-", "_"))
    return Kernel(version, vmlinuz, modules, frozenset(builtin))


def _quote(value: object) -> str:
    """Shell-quote a value for the dpkg-deb | tar pipeline."""
    return shlex.quote(str(value))


def _module_bytes(path: Path) -> bytes:
    """A module's .ko content, decompressed when the package ships .ko.xz/.gz/.zst."""
    if path.name.endswith(".ko"):
        return path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".zst"):
        proc = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=False)
        if proc.returncode != 0:
            raise SetupError(f"cannot decompress {path.name}: apt-get install zstd")
        return proc.stdout
    raise SetupError(f"unknown kernel module compression: {path.name}")


def install_modules(root: Path, kernel: Kernel, log: Callable[[str], None]) -> list[str]:
    """Write the MODULES the package has as plain .ko files and /init's list; returns that list."""
    moddir = root / "lib" / "modules" / kernel.version
    moddir.mkdir(parents=True, exist_ok=True)
    loaded: list[str] = []
    for mod in MODULES:
        src = kernel.modules.get(mod)
        if src is None:
            why = "built into the kernel" if mod in kernel.builtin else "not in the package"
            log(f"image: module {mod} {why}, skipped")
            continue
        (moddir / f"{mod}.ko").write_bytes(_module_bytes(src))
        loaded.append(mod)
    listing = root / MODULE_LIST.relative_to("/")
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{m}\n" for m in loaded))
    return loaded
