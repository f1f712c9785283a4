"""The guest's userland: busybox, dash, ethtool, testpmd, DPDK plugins and their libraries.

All are the host's own files, copied into the image at the same paths, except the memory
checker (memcheck.c, package data), which the host's gcc compiles statically for the image.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vhostlm.errors import SetupError
from vhostlm.image.host import BIN_PATH, dpkg_version, last_line, run, sha256_file

REQUIRED_PLUGINS: tuple[str, ...] = ("net_virtio", "mempool_ring")
"""DPDK plugins testpmd is not linked against but the guest needs (virtio PMD, ring mempool)."""

OPTIONAL_PLUGINS: tuple[str, ...] = ("net_null",)
"""Small DPDK plugins copied when the host has them (net_null: smoke tests without a NIC)."""

TESTPMD = Path("/usr/bin/dpdk-testpmd")
"""The host's DPDK testpmd, copied into the guest."""

BUSYBOX = Path("/bin/busybox")
"""busybox-static's binary: the guest's userland besides dash, ethtool and testpmd."""

MEMCHECK = Path("/usr/bin/vhostlm-memcheck")
"""Where the image has the in-guest memory checker (compiled from memcheck.c)."""

MEMCHECK_CFLAGS: tuple[str, ...] = ("-std=gnu99", "-O2", "-static", "-s")
"""How memcheck.c is compiled: static (the guest needs none of its libraries), stripped."""

_GCC_HINT = "apt-get install gcc libc6-dev"


def ldd(binary: Path) -> list[Path]:
    """Shared libraries (and the dynamic loader) a binary needs, as the host resolves them."""
    proc = run(["ldd", str(binary)])
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if "not a dynamic executable" in out:
            return []
        raise SetupError(f"ldd {binary} failed: {last_line(proc)}")
    deps: list[Path] = []
    for raw in proc.stdout.splitlines():
        line = raw.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            rest = rest.strip()
            if rest.startswith("not found"):
                raise SetupError(
                    f"{binary} needs {name.strip()}, which is not installed: "
                    f"apt-get install the package that provides it"
                )
            target = rest.split(" (")[0].strip()
            if target.startswith("/"):
                deps.append(Path(target))
        elif line.startswith("/"):
            deps.append(Path(line.split(" (")[0].strip()))
    return deps


def _plugin_dir(eal_lib: Path) -> Path:
    """Directory EAL autoloads plugins from (compiled into librte_eal), e.g. .../pmds-23.0."""
    data = eal_lib.resolve().read_bytes()
    for match in re.finditer(rb"(/[\w./+-]*/dpdk/pmds-[\w.]+)\x00", data):
        candidate = Path(match.group(1).decode())
        if candidate.is_dir():
            return candidate
    found = sorted(Path("/usr/lib").glob("*/dpdk/pmds-*")) + sorted(
        Path("/usr/lib").glob("dpdk/pmds-*")
    )
    if not found:
        raise SetupError(
            "DPDK plugin directory (.../dpdk/pmds-*) not found: apt-get install dpdk-dev"
        )
    return found[-1]


def _plugin_files(pmds: Path, name: str) -> list[Path]:
    """A plugin's files in the plugin dir: the real .so.X.Y and its .so/.so.X symlinks."""
    return sorted(p for p in pmds.glob(f"librte_{name}.so*") if p.is_file())


@dataclass(frozen=True)
class Userland:
    """Host files to copy into the image, at the same paths, and facts about them."""

    files: tuple[Path, ...]
    plugin_dir: Path
    plugins: tuple[str, ...]
    lib_dirs: tuple[Path, ...]


def collect_userland(log: Callable[[str], None]) -> Userland:
    """Find busybox, ethtool, testpmd, the wanted DPDK plugins and every library they need."""
    if dpkg_version("busybox-static") is None or not BUSYBOX.is_file():
        raise SetupError("busybox-static is not installed: apt-get install busybox-static")
    ethtool_bin = shutil.which("ethtool", path=BIN_PATH)
    if ethtool_bin is None:
        raise SetupError("ethtool is not installed: apt-get install ethtool")
    dash_bin = shutil.which("dash", path=BIN_PATH)
    if dash_bin is None:
        raise SetupError("dash is not installed: apt-get install dash")
    if not TESTPMD.is_file():
        raise SetupError(f"{TESTPMD} not found: apt-get install dpdk-dev")
    ethtool = Path(ethtool_bin)

    testpmd_libs = ldd(TESTPMD)
    eal = next((p for p in testpmd_libs if p.name.startswith("librte_eal.so")), None)
    if eal is None:
        raise SetupError(f"{TESTPMD} is not linked against librte_eal (static DPDK build?)")
    pmds = _plugin_dir(eal)

    dash = Path(dash_bin)
    files: list[Path] = [BUSYBOX, dash, ethtool, TESTPMD]
    libs: list[Path] = [*ldd(BUSYBOX), *ldd(dash), *ldd(ethtool), *testpmd_libs]
    plugins: list[str] = []
    for name in REQUIRED_PLUGINS + OPTIONAL_PLUGINS:
        found = _plugin_files(pmds, name)
        if not found:
            if name in OPTIONAL_PLUGINS:
                log(f"image: optional DPDK plugin {name} not on the host, skipped")
                continue
            pkg = f"librte-{name.replace('_', '-')}{pmds.name.split('-')[-1].split('.')[0]}"
            raise SetupError(f"DPDK plugin {name} not found in {pmds}: apt-get install {pkg}")
        plugins.append(name)
        files.extend(found)
        libs.extend(ldd(max(found, key=lambda p: len(p.name))))

    libc = next((p for p in libs if p.name.startswith("libc.so")), None)
    if libc is None:
        raise SetupError(f"ldd {TESTPMD} did not list libc: is it a glibc binary?")
    libgcc = libc.parent / "libgcc_s.so.1"
    if not libgcc.exists():
        raise SetupError(f"{libgcc} not found: apt-get install libgcc-s1")
    libs.append(libgcc)

    unique = list(dict.fromkeys(files + libs))
    lib_dirs = tuple(dict.fromkeys(p.parent for p in libs))
    return Userland(tuple(unique), pmds, tuple(plugins), lib_dirs)


def hash_userland(userland: Userland) -> dict[str, str]:
    """Content hash of every host file the image copies, keyed by its host path."""
    return {str(p): sha256_file(p.resolve()) for p in userland.files}


def dpdk_version() -> str:
    """Upstream version of the DPDK that provides testpmd, e.g. "22.11.11"."""
    proc = run(["dpkg-query", "-S", str(TESTPMD)])
    package = proc.stdout.split(":")[0].strip() if proc.returncode == 0 else "dpdk-dev"
    version = dpkg_version(package)
    if version is None:
        return "unknown"
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def install_userland(root: Path, userland: Userland) -> None:
    """Copy the userland into root with the host's /bin, /lib symlinks, applets and ld.so.cache."""
    for name in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / name
        if host.is_symlink():
            os.symlink(os.readlink(host), root / name)
    for path in userland.files:
        _install_host_path(root, path)
    _busybox_links(root)
    _ldconfig(root, userland.lib_dirs)


def _install_host_path(root: Path, path: Path) -> None:
    """Copy a host file into root at the same path, recreating every symlink on the way."""
    path = Path(os.path.normpath(path))
    parts = path.parts[1:]
    cur = Path("/")
    for i, name in enumerate(parts):
        nxt = cur / name
        if nxt.is_symlink():
            dst = root / nxt.relative_to("/")
            target = os.readlink(nxt)
            if not os.path.lexists(dst):
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, dst)
            resolved = Path(os.path.normpath(cur / target))
            _install_host_path(root, resolved.joinpath(*parts[i + 1 :]))
            return
        cur = nxt
    dst = root / cur.relative_to("/")
    if cur.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
    elif not os.path.lexists(dst):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cur, dst)


def _busybox_links(root: Path) -> None:
    """Symlink every busybox applet to /bin/busybox, unless a real program is already there."""
    proc = run([str(BUSYBOX), "--list-full"])
    if proc.returncode != 0:
        raise SetupError(f"busybox --list-full failed: {last_line(proc)}")
    for rel in proc.stdout.split():
        dst = root / rel
        if os.path.lexists(dst):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", dst)


def _ldconfig(root: Path, lib_dirs: Iterable[Path]) -> None:
    """Write the image's ld.so.conf and ld.so.cache so the loader finds every copied library."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "ld.so.conf").write_text("".join(f"{d}\n" for d in lib_dirs))
    ldconfig = shutil.which("ldconfig", path=BIN_PATH)
    if ldconfig is not None:
        # -X: leave the copied symlinks as they are; a failure only costs the cache.
        run([ldconfig, "-X", "-r", str(root)])


def memcheck_source() -> bytes:
    """The memory checker's C source (memcheck.c, shipped as package data)."""
    return resources.files("vhostlm.image").joinpath("memcheck.c").read_bytes()


def hash_memcheck() -> dict[str, str]:
    """Cache-key entry of the memory checker: its source and the toolchain that compiles it
    (gcc and the static libc it links), keyed by its path in the image."""
    h = hashlib.sha256(memcheck_source())
    for package in ("gcc", "libc6-dev"):
        h.update(f"\n{package} {dpkg_version(package) or '-'}".encode())
    h.update(f"\ncflags {' '.join(MEMCHECK_CFLAGS)}".encode())
    return {str(MEMCHECK): h.hexdigest()}


def build_memcheck(out: Path) -> Path:
    """Compile memcheck.c with the host's gcc into out, a static binary; SetupError if not."""
    gcc = shutil.which("gcc", path=BIN_PATH)
    if gcc is None:
        raise SetupError(
            f"gcc is not installed (it builds the guest's memory checker): {_GCC_HINT}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("vhostlm.image").joinpath("memcheck.c")) as src:
        proc = run([gcc, *MEMCHECK_CFLAGS, "-o", str(out), str(src)])
    if proc.returncode != 0 or not out.is_file():
        raise SetupError(
            f"gcc could not build the guest's memory checker ({last_line(proc)}): {_GCC_HINT}"
        )
    out.chmod(0o755)
    return out
