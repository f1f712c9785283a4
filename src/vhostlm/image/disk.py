"""A Debian 12 disk image to boot as the user's own guest would be: `vhostlm image disk`.

mmdebstrap installs systemd, Debian's kernel, iproute2, ethtool and DPDK (testpmd and its
PMDs) from the machine's own apt sources; the image boots through its own bootloader
(syslinux on a FAT partition, SeaBIOS reads the MBR) into a root ext4 partition made
with `mke2fs -d`, so nothing is mounted or loop-attached on the build machine. The root
password is made for the image and kept beside it (0600), never in results or logs. The
image is cached by its inputs like the initramfs, and only copied out with --output.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vhostlm.errors import SetupError

DISK_BUILDER = "3"  # bump when the layout changes
SUITE = "bookworm"
PACKAGES: tuple[str, ...] = (
    "systemd-sysv", "udev", "linux-image-amd64", "initramfs-tools", "iproute2", "ethtool",
    "dpdk", "dpdk-dev", "kmod", "procps",
)  # fmt: skip
# what the guest loads (their dependencies are kept too); every other module is removed
KEEP_MODULES: tuple[str, ...] = (
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "ext4", "crc32c_generic",
    "crc32c_intel", "uio_pci_generic", "vfio_pci", "vfio_iommu_type1", "af_packet",
)  # fmt: skip
INITRAMFS_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "ext4")
# units masked: each costs seconds of a TCG guest's boot and none serves a case (measured
# with systemd-analyze blame: dpdk.service 4.3 s, e2scrub_reap 3.4 s, getty-static 2.5 s).
# dpdk.service binds NICs and reserves hugepages from /etc/dpdk: the cases do their own.
MASKED: tuple[str, ...] = ("dpdk.service", "e2scrub_reap.service", "getty-static.service")
HOSTNAME = "vhostlm-guest"
USER = "root"
CMDLINE = "root=LABEL=vhostlm-root rw console=ttyS0 quiet loglevel=3 systemd.show_status=0"
BOOT_MB = 96  # the FAT partition: syslinux, the kernel and its initramfs
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
SYSLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")
EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
TOOLS: tuple[tuple[str, str], ...] = (
    ("mmdebstrap", "mmdebstrap"), ("syslinux", "syslinux"), ("mcopy", "mtools"),
    ("mkfs.fat", "dosfstools"), ("mke2fs", "e2fsprogs"), ("sfdisk", "fdisk"),
    ("qemu-img", "qemu-utils"),
)  # fmt: skip


@dataclass(frozen=True)
class DiskImage:
    """A built disk image: the qcow2 file, the file holding its root password, and what
    went into it."""

    path: Path
    password_file: Path
    kernel_version: str
    dpdk_version: str
    digest: str

    @property
    def user(self) -> str:
        """The user to log in as on its serial console."""
        return USER


def disk_digest() -> str:
    """The cache key: every input of the build (DISK_BUILDER stands for the steps)."""
    h = hashlib.sha256()
    for line in (
        f"builder {DISK_BUILDER}",
        f"suite {SUITE}",
        f"packages {' '.join(PACKAGES)}",
        f"modules {' '.join(KEEP_MODULES)} / {' '.join(INITRAMFS_MODULES)}",
        f"cmdline {CMDLINE}",
        f"masked {' '.join(MASKED)}",
    ):
        h.update(line.encode() + b"\n")
    return h.hexdigest()


def _run(argv: Sequence[str], what: str, timeout: float = 1800) -> str:
    """Run a build step; SetupError naming it and its last line of output."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise SetupError(f"disk image: {what} failed: {lines[-1] if lines else proc.returncode}")
    return proc.stdout


def password_file(image: Path) -> Path:
    """Where the password of `image`'s root login is kept: beside it, `<image>.password`."""
    return image.with_name(image.name + ".password")


def check_tools() -> None:
    """Every program the build needs; SetupError naming the Debian package of the first
    missing one (`make deps` installs them all)."""
    for tool, package in TOOLS:
        if shutil.which(tool) is None:
            raise SetupError(f"disk image: {tool} not found: apt-get install {package}")


def load_disk(directory: Path, digest: str) -> DiskImage | None:
    """The image cached in `directory` if it is complete and of this key."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    image = directory / "debian.qcow2"
    password = password_file(image)
    if meta.get("digest") != digest or not image.is_file() or not password.is_file():
        return None
    return DiskImage(image, password, meta["kernel_version"], meta["dpdk_version"], digest)


def build_disk(
    cache_dir: Path, log: Callable[[str], None] = lambda s: None, force: bool = False
) -> DiskImage:
    """The cached Debian disk image for the current inputs, built first if needed."""
    started = time.monotonic()
    digest = disk_digest()
    final = cache_dir.resolve() / digest[:16]
    if not force and (cached := load_disk(final, digest)) is not None:
        log(f"disk image: cached {cached.path}")
        return cached
    check_tools()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        root = tmp / "root"
        log(f"disk image: mmdebstrap {SUITE} ({', '.join(PACKAGES)})")
        _run(["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              *(f"--dpkgopt=path-exclude={p}" for p in EXCLUDES), SUITE, str(root)],
             "mmdebstrap")  # fmt: skip
        password = secrets.token_urlsafe(18)
        version = configure(root, password)
        log(f"disk image: kernel {version}: modules pruned, initramfs rebuilt")
        out = tmp / "out"
        out.mkdir()
        raw = tmp / "disk.raw"
        assemble(root, version, raw, tmp)
        log("disk image: converting to qcow2")
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "debian.qcow2")],
             "qemu-img convert")  # fmt: skip
        pw = password_file(out / "debian.qcow2")
        pw.write_text(password + "\n")
        pw.chmod(0o600)
        meta = {
            "digest": digest,
            "kernel_version": version,
            "dpdk_version": dpkg_version(root, "dpdk"),
            "packages": list(PACKAGES),
            "bytes": (out / "debian.qcow2").stat().st_size,
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    image = load_disk(final, digest)
    if image is None:
        raise SetupError(f"disk image: the build left no image in {final}: remove it and retry")
    log(f"disk image: built {image.path} in {time.monotonic() - started:.0f} s")
    return image


def dpkg_version(root: Path, package: str) -> str:
    """The version of `package` installed in `root` ('' if it is not)."""
    proc = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Version}", package],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else ""


def configure(root: Path, password: str) -> str:
    """Hostname, fstab, the masked units, the root password, only the kernel modules the
    guest needs and a small initramfs for them; the kernel version."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise SetupError("disk image: mmdebstrap installed no kernel (linux-image-amd64)")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    (root / "etc/hostname").write_text(HOSTNAME + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
    (root / "etc/fstab").write_text("LABEL=vhostlm-root / ext4 defaults 0 1\n")
    mask_units(root / "etc/systemd/system", MASKED)
    conf = root / "etc/initramfs-tools"
    (conf / "modules").write_text("".join(f"{m}\n" for m in INITRAMFS_MODULES))
    (conf / "conf.d").mkdir(exist_ok=True)
    (conf / "conf.d/vhostlm").write_text("MODULES=list\nCOMPRESS=zstd\n")
    subprocess.run(["chroot", str(root), "chpasswd"], input=f"{USER}:{password}\n",
                   text=True, check=True, capture_output=True)  # fmt: skip
    prune_modules(root / "lib/modules" / version, KEEP_MODULES)
    _run(["chroot", str(root), "depmod", "-a", version], "depmod")
    _run(["chroot", str(root), "update-initramfs", "-u", "-k", version], "update-initramfs")
    return version


def mask_units(unit_dir: Path, units: Sequence[str]) -> None:
    """`systemctl mask` without a running systemd: each unit linked to /dev/null."""
    unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in units:
        link = unit_dir / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def module_closure(dep_text: str, wanted: Sequence[str]) -> set[str]:
    """The module files (paths as modules.dep names them) of `wanted` and everything they
    depend on; names compare with - and _ alike."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in dep_text.splitlines():
        path, _, rest = line.partition(":")
        if not path:
            continue
        deps[path] = rest.split()
        by_name[Path(path).name.split(".ko")[0].replace("-", "_")] = path
    keep: set[str] = set()
    todo = [by_name[m] for m in wanted if m in by_name]
    while todo:
        path = todo.pop()
        if path not in keep:
            keep.add(path)
            todo += deps.get(path, [])
    return keep


def prune_modules(moddir: Path, wanted: Sequence[str]) -> int:
    """Remove every module file of `moddir` outside the closure of `wanted`; how many."""
    keep = module_closure((moddir / "modules.dep").read_text(), wanted)
    removed = 0
    for path in (moddir / "kernel").rglob("*.ko*"):
        if str(path.relative_to(moddir)) not in keep:
            path.unlink()
            removed += 1
    return removed


def assemble(root: Path, version: str, raw: Path, tmp: Path) -> None:
    """An MBR disk: syslinux's boot code, a bootable FAT partition with syslinux, the
    kernel and initramfs, and the root ext4 partition (`mke2fs -d`, nothing mounted)."""
    boot = tmp / "boot.fat"
    _run(["mkfs.fat", "-C", "-n", "VHLBOOT", str(boot), str(BOOT_MB * 1024)], "mkfs.fat")
    _run(["syslinux", "--install", str(boot)], "syslinux --install")
    cfg = tmp / "syslinux.cfg"
    cfg.write_text(
        "DEFAULT debian\nPROMPT 0\nTIMEOUT 0\nSERIAL 0 115200\n"
        f"LABEL debian\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND {CMDLINE}\n"
    )
    for src, name in (
        (root / f"boot/vmlinuz-{version}", "vmlinuz"),
        (root / f"boot/initrd.img-{version}", "initrd.img"),
        (cfg, "syslinux.cfg"),
    ):
        _run(["mcopy", "-i", str(boot), str(src), f"::/{name}"], f"mcopy {name}")
    used_kb = int(_run(["du", "-sk", "--exclude=./boot", str(root)], "du").split()[0])
    root_mb = used_kb * 13 // 10 // 1024 + 256  # a third more, and room to write
    rootfs = tmp / "root.ext4"
    _run(["mke2fs", "-q", "-t", "ext4", "-L", "vhostlm-root", "-d", str(root), str(rootfs),
          f"{root_mb}M"], "mke2fs")  # fmt: skip
    start_mb, total_mb = 1, 1 + BOOT_MB + root_mb
    with raw.open("wb") as f:
        f.truncate(total_mb << 20)
    layout = (
        "label: dos\n"
        f"start={start_mb << 11}, size={BOOT_MB << 11}, type=6, bootable\n"
        f"start={(start_mb + BOOT_MB) << 11}, size={root_mb << 11}, type=83\n"
    )
    subprocess.run(["sfdisk", "-q", str(raw)], input=layout, text=True, check=True,
                   capture_output=True)  # fmt: skip
    for part, offset_mb in ((boot, start_mb), (rootfs, start_mb + BOOT_MB)):
        _run(["dd", f"if={part}", f"of={raw}", "bs=1M", f"seek={offset_mb}", "conv=notrunc,sparse",
              "status=none"], "dd")  # fmt: skip
    _run(["dd", f"if={SYSLINUX_MBR}", f"of={raw}", "bs=440", "count=1", "conv=notrunc",
          "status=none"], "dd mbr")  # fmt: skip
    os.sync()
