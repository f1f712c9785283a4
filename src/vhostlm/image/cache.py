"""The image cache: a key hashed from every build input, and the images stored under it.

An image lives in cache_dir/<first 16 hex of its key>, with a meta.json naming the full key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vhostlm.image.kernel import MODULES
from vhostlm.image.userland import OPTIONAL_PLUGINS, REQUIRED_PLUGINS

BUILDER_VERSION = "3"
"""Bump when the image layout changes, so cached images are rebuilt."""

_STALE_BUILD_SECONDS = 3600.0


@dataclass(frozen=True)
class GuestImage:
    """A bootable guest: kernel, initramfs and what went into them.

    kernel is what to pass to QEMU's -kernel: the uncompressed ELF vmlinux (PVH entry,
    ~3 s faster to boot under TCG than decompressing the XZ bzImage), or the bzImage
    (vmlinuz, always kept next to it) when the kernel has no PVH entry point.
    """

    kernel: Path
    initrd: Path
    kernel_version: str
    dpdk_version: str
    digest: str


def compute_digest(kernel_package: str, file_hashes: Mapping[str, str], init_sh: bytes) -> str:
    """Cache key of an image: sha256 over every input, so any change triggers a rebuild."""
    h = hashlib.sha256()
    h.update(f"builder {BUILDER_VERSION}\n".encode())
    h.update(f"kernel {kernel_package}\n".encode())
    h.update(f"modules {' '.join(MODULES)}\n".encode())
    h.update(f"plugins {' '.join(REQUIRED_PLUGINS + OPTIONAL_PLUGINS)}\n".encode())
    for path in sorted(file_hashes):
        h.update(f"file {path} {file_hashes[path]}\n".encode())
    h.update(b"init ")
    h.update(hashlib.sha256(init_sh).digest())
    return h.hexdigest()


def image_dir(cache_dir: Path, digest: str) -> Path:
    """Where the image with this cache key is stored."""
    return cache_dir / digest[:16]


def load_cached(final: Path, digest: str) -> GuestImage | None:
    """The image stored in final if its meta.json matches digest and its files exist."""
    try:
        meta = json.loads((final / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("digest") != digest:
        return None
    kernel, initrd = final / str(meta.get("kernel", "vmlinuz")), final / "initrd.gz"
    if not (kernel.is_file() and initrd.is_file()):
        return None
    return GuestImage(
        kernel=kernel,
        initrd=initrd,
        kernel_version=str(meta.get("kernel_version", "")),
        dpdk_version=str(meta.get("dpdk_version", "")),
        digest=digest,
    )


def remove_stale_builds(cache_dir: Path) -> None:
    """Delete temp build dirs that crashed builds left behind (older than an hour)."""
    now = time.time()
    for tmp in cache_dir.glob(".build-*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_BUILD_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def publish(out: Path, final: Path, tmp: Path) -> None:
    """Move a finished image to its final dir by rename, replacing an old one if present."""
    if os.path.lexists(final):
        os.rename(final, tmp / "old")
    try:
        os.rename(out, final)
    except OSError:
        # A concurrent build published the same digest first: keep theirs.
        if not final.is_dir():
            raise
