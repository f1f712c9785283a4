"""Tests of the guest image builder: cache key, module order, and a real build."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vhostlm.image import build
from vhostlm.image.build import (
    MODULES,
    READY_MARKER,
    compute_digest,
    init_script,
)

HASHES = {"/usr/bin/dpdk-testpmd": "ab" * 32, "/bin/busybox": "cd" * 32}
KERNEL = "linux-image-6.1.0-56-amd64=6.1.192-2"


def test_digest_is_stable_for_same_inputs() -> None:
    init = init_script()
    assert compute_digest(KERNEL, HASHES, init) == compute_digest(KERNEL, dict(HASHES), init)
    assert compute_digest(KERNEL, HASHES, init) == compute_digest(
        KERNEL, dict(reversed(list(HASHES.items()))), init
    )


def test_digest_changes_with_init_script() -> None:
    init = init_script()
    assert compute_digest(KERNEL, HASHES, init) != compute_digest(KERNEL, HASHES, init + b"\n")


def test_digest_changes_with_files_kernel_and_builder_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    init = init_script()
    base = compute_digest(KERNEL, HASHES, init)
    changed = dict(HASHES, **{"/bin/busybox": "ef" * 32})
    assert compute_digest(KERNEL, changed, init) != base
    assert compute_digest(KERNEL.replace("192-2", "193-1"), HASHES, init) != base
    monkeypatch.setattr(build, "BUILDER_VERSION", build.BUILDER_VERSION + "x")
    assert compute_digest(KERNEL, HASHES, init) != base


def test_module_order() -> None:
    assert MODULES == (
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


def test_init_script_prints_ready_marker_and_prompt() -> None:
    text = init_script().decode()
    assert text.startswith("#!/bin/sh\n")
    assert f'echo "{READY_MARKER} $kver"' in text
    assert "PS1='vhostlm-guest# '" in text
    assert "/etc/vhostlm/modules" in text


def test_bzimage_payload_rejects_non_bzimage() -> None:
    with pytest.raises(ValueError):
        build._bzimage_payload(b"\0" * 4096)


def _initrd_names(initrd: Path) -> set[str]:
    """Member names of a gzipped newc cpio archive, without a leading ./ ."""
    proc = subprocess.run(
        ["cpio", "-t", "--quiet"],
        input=gzip.decompress(initrd.read_bytes()),
        capture_output=True,
        check=True,
    )
    return {n.removeprefix("./") for n in proc.stdout.decode().split("\n") if n}


def test_build_image(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("building the image needs root (device node, apt-get download)")
    if build._dpkg_version("busybox-static") is None or shutil.which("cpio") is None:
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
    assert any(n.endswith("/librte_net_virtio.so.23.0") for n in names)
    assert not any(n.endswith("/librte_net_vhost.so.23.0") for n in names)
    assert any("libgcc_s.so.1" in n for n in names)

    # Same inputs: the cached image comes back without a rebuild.
    logs.clear()
    again = build.build_image(tmp_path, log=logs.append)
    assert again == image
    assert any("cached" in line for line in logs)
    assert not any("packing" in line for line in logs)
