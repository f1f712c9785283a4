"""Which linux-image package the guest boots, and its .deb: found and downloaded with apt.

The package is only unpacked (kernel.py), never installed; .debs are kept in cache_dir/debs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from vhostlm.errors import SetupError
from vhostlm.image.host import last_line, run

_APT_OPTS = ["-o", "APT::Sandbox::User=root"]


def _apt_update(log: Callable[[str], None]) -> None:
    """Refresh apt's package lists (only when they are missing or stale)."""
    log("image: running apt-get update")
    proc = run(["apt-get", *_APT_OPTS, "-q", "update"])
    if proc.returncode != 0:
        raise SetupError(f"apt-get update failed: {last_line(proc)}")


def _query_kernel_package() -> tuple[str, str] | None:
    """Name and candidate version of the kernel package linux-image-amd64 depends on."""
    # One apt-cache call costs ~1 s when apt's pkgcache is disabled (Docker-style images).
    proc = run(["apt-cache", "show", "--no-all-versions", "linux-image-amd64"])
    if proc.returncode != 0:
        return None
    match = re.search(
        r"^Depends:.*?(linux-image-[^\s,(]+)(?:\s*\(=\s*([^)\s]+)\))?", proc.stdout, re.M
    )
    if match is None:
        return None
    name, version = match.group(1), match.group(2)
    if version is None:
        show = run(["apt-cache", "show", "--no-all-versions", name])
        found = re.search(r"^Version:\s*(\S+)", show.stdout, re.MULTILINE)
        if show.returncode != 0 or found is None:
            return None
        version = found.group(1)
    return name, version


def _apt_state() -> str:
    """Fingerprint of apt's package lists and sources: when it changes, ask apt again."""
    paths: list[Path] = []
    for pattern in ("lists/*", "lists/auxfiles/*"):
        paths.extend(Path("/var/lib/apt").glob(pattern))
    for pattern in ("sources.list", "sources.list.d/*", "preferences", "preferences.d/*"):
        paths.extend(Path("/etc/apt").glob(pattern))
    h = hashlib.sha256()
    for path in sorted(paths):
        try:
            st = path.stat()
        except OSError:
            continue
        h.update(f"{path} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def kernel_package(cache_dir: Path, log: Callable[[str], None]) -> tuple[str, str]:
    """Resolve the kernel package (memoized per apt-lists state); apt-get update if unknown."""
    memo = cache_dir / "kernel-package.json"
    state = _apt_state()
    try:
        known = json.loads(memo.read_text())
        if known["apt_state"] == state:
            return str(known["name"]), str(known["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = _query_kernel_package()
    if found is None:
        _apt_update(log)
        state = _apt_state()
        found = _query_kernel_package()
    if found is None:
        raise SetupError(
            "apt knows no linux-image-amd64 package: check /etc/apt/sources.list, "
            "then apt-get update"
        )
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"apt_state": state, "name": found[0], "version": found[1]}))
    os.replace(tmp, memo)
    return found


def _deb_version(deb: Path) -> str | None:
    """Version field of a .deb file, or None if it is not a readable package."""
    proc = run(["dpkg-deb", "-f", str(deb), "Version"])
    return proc.stdout.strip() if proc.returncode == 0 else None


def _cached_debs(debs: Path, name: str) -> list[Path]:
    """Already downloaded .deb files of a package, newest first."""
    return sorted(debs.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime, reverse=True)


def _apt_download(name: str, version: str, dest: Path) -> Path | None:
    """apt-get download one package version into dest (atomically); None on failure."""
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        proc = run(["apt-get", *_APT_OPTS, "-q", "download", f"{name}={version}"], cwd=tmp)
        got = sorted(tmp.glob(f"{name}_*.deb"))
        if proc.returncode != 0 or not got:
            return None
        final = dest / got[0].name
        os.replace(got[0], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_kernel_deb(cache_dir: Path, log: Callable[[str], None]) -> tuple[str, str, Path]:
    """The kernel .deb in cache_dir/debs, downloaded if needed; returns (name, version, path)."""
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    name, version = kernel_package(cache_dir, log)
    for deb in _cached_debs(debs, name):
        if _deb_version(deb) == version:
            return name, version, deb
    log(f"image: downloading {name} {version}")
    got = _apt_download(name, version, debs)
    if got is None:
        # Lists may be stale (version gone from the mirror) or missing: refresh once.
        _apt_update(log)
        name, version = kernel_package(cache_dir, log)
        got = _apt_download(name, version, debs)
    if got is None:
        cached = _cached_debs(debs, name)
        if cached:
            log(f"image: download failed, using the cached {cached[0].name}")
            return name, _deb_version(cached[0]) or "unknown", cached[0]
        raise SetupError(
            f"apt-get download {name}={version} failed: check the network and "
            "/etc/apt/sources.list, then apt-get update"
        )
    return name, version, got
