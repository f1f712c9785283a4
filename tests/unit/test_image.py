"""Tests of the guest image builder, module by module, and of one real build."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vhostlm.errors import SetupError
from vhostlm.guests.contract import MODULE_LIST, PROMPT, READY_MARKER, VERBOSE_OPTION
from vhostlm.image import build, cache, kernel_package, pvh, userland
from vhostlm.image.cache import compute_digest, load_cached
from vhostlm.image.host import dpkg_version
from vhostlm.image.initramfs import init_script, write_initramfs
from vhostlm.image.kernel import MODULES, Kernel, install_modules

HASHES = {"/usr/bin/dpdk-testpmd": "ab" * 32, "/bin/busybox": "cd" * 32}
KERNEL = "linux-image-6.1.0-56-amd64=6.1.192-2"


def _done(stdout: str, returncode: int = 0) -> subprocess.CompletedProcess[str]:
    """A finished command's result, as host.run returns it."""
    return subprocess.CompletedProcess([], returncode, stdout=stdout, stderr="")


# contract (guests/contract.py against image/init.sh)


def test_init_script_keeps_the_guest_contract() -> None:
    text = init_script().decode()
    assert text.startswith("#!/bin/sh\n")
    assert f'echo "{READY_MARKER} $kver"' in text
    assert f"export PS1='{PROMPT}'" in text
    assert f"done <{MODULE_LIST}\n" in text
    assert f'*" {VERBOSE_OPTION} "*) ;;' in text


# cache.py: the cache key and the stored images


def test_digest_is_pinned() -> None:
    # Cached images are found by this key: a change here rebuilds every image. When that
    # is wanted (BUILDER_VERSION bumped, new MODULES or plugins), update the pin.
    assert compute_digest(KERNEL, HASHES, b"#!/bin/sh\n") == (
        "29b8fc2595555f831fa90e2ce84f5191fb6b61dde220886352bb9c829bd98853"
    )


def test_digest_is_stable_for_same_inputs() -> None:
    init = init_script()
    assert compute_digest(KERNEL, HASHES, init) == compute_digest(KERNEL, dict(HASHES), init)
    assert compute_digest(KERNEL, HASHES, init) == compute_digest(
        KERNEL, dict(reversed(list(HASHES.items()))), init
    )


def test_digest_changes_with_every_input(monkeypatch: pytest.MonkeyPatch) -> None:
    init = init_script()
    base = compute_digest(KERNEL, HASHES, init)
    assert compute_digest(KERNEL, HASHES, init + b"\n") != base
    changed = dict(HASHES, **{"/bin/busybox": "ef" * 32})
    assert compute_digest(KERNEL, changed, init) != base
    assert compute_digest(KERNEL.replace("192-2", "193-1"), HASHES, init) != base
    monkeypatch.setattr(cache, "BUILDER_VERSION", cache.BUILDER_VERSION + "x")
    assert compute_digest(KERNEL, HASHES, init) != base


def test_load_cached_needs_matching_digest_and_files(tmp_path: Path) -> None:
    digest = "12" * 32
    meta = {"digest": digest, "kernel": "vmlinux", "kernel_version": "6.1", "dpdk_version": "22"}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "vmlinux").write_bytes(b"elf")
    assert load_cached(tmp_path, digest) is None  # no initrd.gz yet
    (tmp_path / "initrd.gz").write_bytes(b"gz")
    image = load_cached(tmp_path, digest)
    assert image is not None and image.kernel == tmp_path / "vmlinux"
    assert (image.kernel_version, image.dpdk_version, image.digest) == ("6.1", "22", digest)
    assert load_cached(tmp_path, "34" * 32) is None


# kernel.py: modules


def test_modules_load_after_what_they_depend_on() -> None:
    # each module's dependencies as the 6.1 kernel's modules.dep gives them (hand-written)
    needs = {
        "virtio_net": {"virtio_ring", "virtio", "net_failover"},
        "net_failover": {"failover"},
        "virtio_pci": {"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev"},
        "uio_pci_generic": {"uio"},
    }
    assert set(needs) | {d for deps in needs.values() for d in deps} == set(MODULES)
    for module, deps in needs.items():
        for dep in deps:
            assert MODULES.index(dep) < MODULES.index(module), f"{dep} after {module}"


def test_install_modules_decompresses_and_lists_what_it_has(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "virtio.ko.xz").write_bytes(lzma.compress(b"virtio module"))
    (pkg / "uio.ko.gz").write_bytes(gzip.compress(b"uio module"))
    (pkg / "failover.ko").write_bytes(b"failover module")
    mods = {"virtio": pkg / "virtio.ko.xz", "uio": pkg / "uio.ko.gz"}
    mods["failover"] = pkg / "failover.ko"
    kern = Kernel("6.1.0-9-amd64", pkg / "vmlinuz", mods, frozenset({"virtio_ring"}))
    root = tmp_path / "root"
    logs: list[str] = []

    loaded = install_modules(root, kern, logs.append)

    assert loaded == ["virtio", "failover", "uio"]  # MODULES order, not the package's
    moddir = root / "lib" / "modules" / "6.1.0-9-amd64"
    assert (moddir / "virtio.ko").read_bytes() == b"virtio module"
    assert (moddir / "uio.ko").read_bytes() == b"uio module"
    assert (root / MODULE_LIST.relative_to("/")).read_text() == "virtio\nfailover\nuio\n"
    assert "image: module virtio_ring built into the kernel, skipped" in logs
    assert "image: module virtio_net not in the package, skipped" in logs


# kernel_package.py: which linux-image apt offers


def test_kernel_package_from_apt_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    shows = {
        "linux-image-amd64": "Package: linux-image-amd64\nVersion: 6.1.192-3\n"
        "Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)\n",
    }
    monkeypatch.setattr(kernel_package, "run", lambda cmd, cwd=None: _done(shows[cmd[-1]]))
    assert kernel_package._query_kernel_package() == ("linux-image-6.1.0-57-amd64", "6.1.192-3")

    # No pinned version in Depends: the dependency's own Version is asked for.
    shows["linux-image-amd64"] = "Depends: linux-image-6.1.0-58-amd64, initramfs-tools\n"
    shows["linux-image-6.1.0-58-amd64"] = "Version: 6.1.200-1\n"
    assert kernel_package._query_kernel_package() == ("linux-image-6.1.0-58-amd64", "6.1.200-1")

    shows["linux-image-amd64"] = "Depends: something-else\n"
    assert kernel_package._query_kernel_package() is None


# userland.py: the libraries a host binary needs


def test_ldd_parses_libraries_and_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    out = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f10)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f20)\n"
    )
    monkeypatch.setattr(userland, "run", lambda cmd, cwd=None: _done(out))
    assert userland.ldd(Path("/usr/bin/x")) == [
        Path("/lib/x86_64-linux-gnu/libc.so.6"),
        Path("/lib64/ld-linux-x86-64.so.2"),
    ]
    missing = _done("\tlibfoo.so.1 => not found\n")
    monkeypatch.setattr(userland, "run", lambda cmd, cwd=None: missing)
    with pytest.raises(SetupError, match="libfoo.so.1"):
        userland.ldd(Path("/usr/bin/x"))
    static = _done("\tnot a dynamic executable\n", returncode=1)
    monkeypatch.setattr(userland, "run", lambda cmd, cwd=None: static)
    assert userland.ldd(Path("/bin/busybox")) == []


# pvh.py: the vmlinux QEMU boots directly


def _elf_with_note(n_type: int) -> bytes:
    """A minimal x86-64 ELF whose one PT_NOTE segment holds a "Xen" note of type n_type."""
    note = struct.pack("<III", 4, 4, n_type) + b"Xen\0" + b"\0" * 4
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = bytearray(56)
    struct.pack_into("<IIQ", phdr, 0, 4, 0, 120)  # PT_NOTE at offset 64 + 56
    struct.pack_into("<Q", phdr, 0x20, len(note))
    return bytes(header + phdr) + note


def test_pvh_entry_note_is_found() -> None:
    assert pvh._has_pvh_entry(_elf_with_note(18))
    assert not pvh._has_pvh_entry(_elf_with_note(17))
    assert not pvh._has_pvh_entry(b"MZ" + bytes(100))


def test_bzimage_payload_rejects_non_bzimage() -> None:
    with pytest.raises(ValueError):
        pvh._bzimage_payload(b"\0" * 4096)


# initramfs.py: packing


def _initrd_names(initrd: Path) -> set[str]:
    """Member names of a gzipped newc cpio archive, without a leading ./ ."""
    proc = subprocess.run(
        ["cpio", "-t", "--quiet"],
        input=gzip.decompress(initrd.read_bytes()),
        capture_output=True,
        check=True,
    )
    return {n.removeprefix("./") for n in proc.stdout.decode().split("\n") if n}


def test_write_initramfs_packs_files_and_directory_symlinks(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("cpio is not installed")
    root = tmp_path / "root"
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "libx.so").write_bytes(b"x")
    os.symlink("usr/lib", root / "lib")
    (root / "init").write_bytes(b"#!/bin/sh\n")

    write_initramfs(root, tmp_path / "initrd.gz")

    assert _initrd_names(tmp_path / "initrd.gz") == {
        ".", "init", "lib", "usr", "usr/lib", "usr/lib/libx.so"
    }  # fmt: skip


# build.py: one real build, then the cache hit


def test_build_image(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("building the image needs root (device node, apt-get download)")
    if dpkg_version("busybox-static") is None or shutil.which("cpio") is None:
        pytest.skip("busybox-static or cpio is not installed")
    # Reuse the downloaded kernel package of the developer cache when there is one.
    shared_debs = Path(__file__).resolve().parents[2] / ".cache" / "images" / "debs"
    if shared_debs.is_dir():
        (tmp_path / "debs").mkdir()
        for deb in shared_debs.glob("linux-image-*.deb"):
            os.link(deb, tmp_path / "debs" / deb.name)
    logs: list[str] = []
    image = build.build_image(tmp_path, log=logs.append)

    assert image.kernel.is_file() and image.initrd.is_file()
    assert image.kernel.parent == tmp_path / image.digest[:16]
    assert image.kernel_version and image.dpdk_version[:1].isdigit()
    names = _initrd_names(image.initrd)
    assert {"init", "bin", "usr/bin/busybox", "usr/bin/dpdk-testpmd", "usr/bin/dash"} <= names
    assert f"usr/lib/modules/{image.kernel_version}/virtio_net.ko" in names
    assert MODULE_LIST.relative_to("/").as_posix() in names
    assert any(n.endswith("/librte_net_virtio.so.23.0") for n in names)
    assert not any(n.endswith("/librte_net_vhost.so.23.0") for n in names)
    assert any("libgcc_s.so.1" in n for n in names)

    # Same inputs: the cached image comes back without a rebuild.
    logs.clear()
    again = build.build_image(tmp_path, log=logs.append)
    assert again == image
    assert any("cached" in line for line in logs)
    assert not any("packing" in line for line in logs)
