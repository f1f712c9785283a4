"""Builds (and caches) the guest's kernel and initramfs: the steps in order, nothing more.

Inputs are resolved and hashed first, so an unchanged image is found without unpacking anything.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vhostlm.errors import SetupError
from vhostlm.image.cache import (
    BUILDER_VERSION,
    GuestImage,
    compute_digest,
    image_dir,
    load_cached,
    publish,
    remove_stale_builds,
)
from vhostlm.image.initramfs import add_skeleton, init_script, write_initramfs
from vhostlm.image.kernel import extract_kernel, install_modules
from vhostlm.image.kernel_package import fetch_kernel_deb, kernel_package
from vhostlm.image.pvh import pvh_kernel
from vhostlm.image.userland import (
    MEMCHECK,
    build_memcheck,
    collect_userland,
    dpdk_version,
    hash_memcheck,
    hash_userland,
    install_userland,
)


def build_image(
    cache_dir: Path, log: Callable[[str], None] = lambda s: None, force: bool = False
) -> GuestImage:
    """Return the cached guest image for the current inputs, building it first if needed."""
    started = time.monotonic()
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)

    log("image: resolving inputs")
    kernel_name, kernel_version_deb = kernel_package(cache_dir, log)
    userland = collect_userland(log)
    hashes = hash_userland(userland) | hash_memcheck()
    init_sh = init_script()
    digest = compute_digest(f"{kernel_name}={kernel_version_deb}", hashes, init_sh)
    final = image_dir(cache_dir, digest)
    if not force:
        cached = load_cached(final, digest)
        if cached is not None:
            log(f"image: cached {final} ({time.monotonic() - started:.1f}s)")
            return cached

    remove_stale_builds(cache_dir)
    kernel_name, deb_version, deb = fetch_kernel_deb(cache_dir, log)
    if deb_version != kernel_version_deb:
        digest = compute_digest(f"{kernel_name}={deb_version}", hashes, init_sh)
        final = image_dir(cache_dir, digest)

    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        log(f"image: unpacking {deb.name}")
        kernel = extract_kernel(deb, tmp / "kernel")
        log(f"image: staging root (kernel {kernel.version}, plugins {', '.join(userland.plugins)})")
        root = tmp / "root"
        root.mkdir()
        install_userland(root, userland)
        log("image: compiling the memory checker (memcheck.c, gcc -static)")
        build_memcheck(root / MEMCHECK.relative_to("/"))
        loaded = install_modules(root, kernel, log)
        add_skeleton(root)
        out = tmp / "out"
        out.mkdir()
        log("image: packing initramfs (cpio newc + gzip)")
        write_initramfs(root, out / "initrd.gz")
        shutil.copyfile(kernel.vmlinuz, out / "vmlinuz")
        log("image: extracting vmlinux for PVH boot")
        pvh = pvh_kernel(kernel.vmlinuz, out / "vmlinux")
        if not pvh:
            log("image: kernel has no PVH entry point, QEMU will boot the bzImage")
        meta = {
            "builder_version": BUILDER_VERSION,
            "digest": digest,
            "kernel_version": kernel.version,
            "kernel": "vmlinux" if pvh else "vmlinuz",
            "kernel_package": f"{kernel_name}={deb_version}",
            "dpdk_version": dpdk_version(),
            "modules": loaded,
            "plugin_dir": str(userland.plugin_dir),
            "plugins": list(userland.plugins),
            "initrd_bytes": (out / "initrd.gz").stat().st_size,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.monotonic() - started, 2),
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        publish(out, final, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"image: built {final} in {time.monotonic() - started:.1f}s")
    image = load_cached(final, digest)
    if image is None:
        raise SetupError(f"image build left no valid image in {final}: remove it and retry")
    return image
