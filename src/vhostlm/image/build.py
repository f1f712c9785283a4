"""Builds (and caches) the guest's kernel and initramfs from Debian packages and host binaries."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import stat
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vhostlm.errors import SetupError

BUILDER_VERSION = "3"
"""Bump when the image layout changes, so cached images are rebuilt."""

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

REQUIRED_PLUGINS: tuple[str, ...] = ("net_virtio", "mempool_ring")
"""DPDK plugins testpmd is not linked against but the guest needs (virtio PMD, ring mempool)."""

OPTIONAL_PLUGINS: tuple[str, ...] = ("net_null",)
"""Small DPDK plugins copied when the host has them (net_null: smoke tests without a NIC)."""

READY_MARKER = "VHOSTLM-GUEST-READY"
"""/init prints this, then the kernel version, when the guest is ready."""

PROMPT = "vhostlm-guest# "
"""PS1 of the guest's root shell on ttyS0."""

TESTPMD = Path("/usr/bin/dpdk-testpmd")
"""The host's DPDK testpmd, copied into the guest."""

BUSYBOX = Path("/bin/busybox")
"""busybox-static's binary: the guest's userland besides dash, ethtool and testpmd."""

_BIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_APT_OPTS = ["-o", "APT::Sandbox::User=root"]
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


# ---------------------------------------------------------------------------------------
# small helpers


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; a missing program becomes a SetupError."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise SetupError(f"{cmd[0]} is not installed or not in PATH: {exc}") from exc


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Last non-empty line of a failed command's output, for a one-line error message."""
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dpkg_version(package: str) -> str | None:
    """Installed version of a Debian package, or None when it is not installed."""
    proc = _run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", package])
    if proc.returncode != 0 or not proc.stdout.startswith("ii"):
        return None
    return proc.stdout.split()[-1]


def init_script() -> bytes:
    """Content of the guest's /init (init.sh, shipped as package data)."""
    return resources.files("vhostlm.image").joinpath("init.sh").read_bytes()


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


# ---------------------------------------------------------------------------------------
# host userland: busybox, ethtool, testpmd and their libraries


def ldd(binary: Path) -> list[Path]:
    """Shared libraries (and the dynamic loader) a binary needs, as the host resolves them."""
    proc = _run(["ldd", str(binary)])
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if "not a dynamic executable" in out:
            return []
        raise SetupError(f"ldd {binary} failed: {_last_line(proc)}")
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
class _Userland:
    """Host files to copy into the image, at the same paths, and facts about them."""

    files: tuple[Path, ...]
    plugin_dir: Path
    plugins: tuple[str, ...]
    lib_dirs: tuple[Path, ...]


def _collect_userland(log: Callable[[str], None]) -> _Userland:
    """Find busybox, ethtool, testpmd, the wanted DPDK plugins and every library they need."""
    if _dpkg_version("busybox-static") is None or not BUSYBOX.is_file():
        raise SetupError("busybox-static is not installed: apt-get install busybox-static")
    ethtool_bin = shutil.which("ethtool", path=_BIN_PATH)
    if ethtool_bin is None:
        raise SetupError("ethtool is not installed: apt-get install ethtool")
    dash_bin = shutil.which("dash", path=_BIN_PATH)
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
    return _Userland(tuple(unique), pmds, tuple(plugins), lib_dirs)


def _hash_userland(userland: _Userland) -> dict[str, str]:
    """Content hash of every host file the image copies, keyed by its host path."""
    return {str(p): sha256_file(p.resolve()) for p in userland.files}


def _dpdk_version() -> str:
    """Upstream version of the DPDK that provides testpmd, e.g. "22.11.11"."""
    proc = _run(["dpkg-query", "-S", str(TESTPMD)])
    package = proc.stdout.split(":")[0].strip() if proc.returncode == 0 else "dpdk-dev"
    version = _dpkg_version(package)
    if version is None:
        return "unknown"
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


# ---------------------------------------------------------------------------------------
# kernel: Debian's linux-image package, downloaded and unpacked, never installed


def _apt_update(log: Callable[[str], None]) -> None:
    """Refresh apt's package lists (only when they are missing or stale)."""
    log("image: running apt-get update")
    proc = _run(["apt-get", *_APT_OPTS, "-q", "update"])
    if proc.returncode != 0:
        raise SetupError(f"apt-get update failed: {_last_line(proc)}")


def _query_kernel_package() -> tuple[str, str] | None:
    """Name and candidate version of the kernel package linux-image-amd64 depends on."""
    # One apt-cache call costs ~1 s when apt's pkgcache is disabled (Docker-style images).
    proc = _run(["apt-cache", "show", "--no-all-versions", "linux-image-amd64"])
    if proc.returncode != 0:
        return None
    match = re.search(
        r"^Depends:.*?(linux-image-[^\s,(]+)(?:\s*\(=\s*([^)\s]+)\))?", proc.stdout, re.M
    )
    if match is None:
        return None
    name, version = match.group(1), match.group(2)
    if version is None:
        show = _run(["apt-cache", "show", "--no-all-versions", name])
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


def _kernel_package(cache_dir: Path, log: Callable[[str], None]) -> tuple[str, str]:
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
    proc = _run(["dpkg-deb", "-f", str(deb), "Version"])
    return proc.stdout.strip() if proc.returncode == 0 else None


def _cached_debs(debs: Path, name: str) -> list[Path]:
    """Already downloaded .deb files of a package, newest first."""
    return sorted(debs.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime, reverse=True)


def _apt_download(name: str, version: str, dest: Path) -> Path | None:
    """apt-get download one package version into dest (atomically); None on failure."""
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        proc = _run(["apt-get", *_APT_OPTS, "-q", "download", f"{name}={version}"], cwd=tmp)
        got = sorted(tmp.glob(f"{name}_*.deb"))
        if proc.returncode != 0 or not got:
            return None
        final = dest / got[0].name
        os.replace(got[0], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_kernel_deb(cache_dir: Path, log: Callable[[str], None]) -> tuple[str, str, Path]:
    """The kernel .deb in cache_dir/debs, downloaded if needed; returns (name, version, path)."""
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    name, version = _kernel_package(cache_dir, log)
    for deb in _cached_debs(debs, name):
        if _deb_version(deb) == version:
            return name, version, deb
    log(f"image: downloading {name} {version}")
    got = _apt_download(name, version, debs)
    if got is None:
        # Lists may be stale (version gone from the mirror) or missing: refresh once.
        _apt_update(log)
        name, version = _kernel_package(cache_dir, log)
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


def _module_pattern(mod: str) -> str:
    """tar wildcard matching a module file anywhere in the package (.ko or compressed)."""
    return "*/" + mod.replace("_", "[_-]") + ".ko*"


@dataclass(frozen=True)
class _Kernel:
    """What the image needs from the unpacked kernel package."""

    version: str
    vmlinuz: Path
    modules: dict[str, Path]
    builtin: frozenset[str]


def _extract_kernel(deb: Path, dest: Path) -> _Kernel:
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
            f"no /boot/vmlinuz-* unpacked from {deb}: {_last_line(proc)} "
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
    return _Kernel(version, vmlinuz, modules, frozenset(builtin))


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


def _bzimage_payload(bzimage: bytes) -> bytes:
    """The compressed vmlinux inside a bzImage, located through its boot-protocol header."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise ValueError("not a bzImage")
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return bzimage[start : start + length]


def _decompress_payload(payload: bytes) -> bytes:
    """Decompress a bzImage payload (xz, gzip or zstd; ValueError for other formats)."""
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(wbits=31).decompress(payload)
    if payload.startswith(b"\x28\xb5\x2f\xfd") and shutil.which("zstd"):
        proc = subprocess.run(["zstd", "-dcq"], input=payload, capture_output=True, check=False)
        if proc.returncode == 0:
            return proc.stdout
    raise ValueError(f"unsupported kernel compression (magic {payload[:4].hex()})")


def _has_pvh_entry(elf: bytes) -> bool:
    """Whether an x86-64 ELF kernel has a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset = struct.unpack_from("<IIQ", elf, phoff + i * phentsize)
        p_filesz = struct.unpack_from("<Q", elf, phoff + i * phentsize + 0x20)[0]
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == 18:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def _pvh_kernel(bzimage: Path, out: Path) -> bool:
    """Write the bzImage's uncompressed vmlinux to out if it can boot via PVH; else False."""
    try:
        elf = _decompress_payload(_bzimage_payload(bzimage.read_bytes()))
    except (ValueError, lzma.LZMAError, zlib.error, struct.error):
        return False
    if not _has_pvh_entry(elf):
        return False
    out.write_bytes(elf)
    return True


# ---------------------------------------------------------------------------------------
# staging the root file system and packing it


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
    proc = _run([str(BUSYBOX), "--list-full"])
    if proc.returncode != 0:
        raise SetupError(f"busybox --list-full failed: {_last_line(proc)}")
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
    ldconfig = shutil.which("ldconfig", path=_BIN_PATH)
    if ldconfig is not None:
        # -X: leave the copied symlinks as they are; a failure only costs the cache.
        _run([ldconfig, "-X", "-r", str(root)])


def _stage_root(
    root: Path, userland: _Userland, kernel: _Kernel, log: Callable[[str], None]
) -> list[str]:
    """Fill root with the userland, modules and /init; returns the modules /init loads."""
    for name in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / name
        if host.is_symlink():
            os.symlink(os.readlink(host), root / name)
    for path in userland.files:
        _install_host_path(root, path)
    _busybox_links(root)
    _ldconfig(root, userland.lib_dirs)

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
    conf = root / "etc" / "vhostlm"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "modules").write_text("".join(f"{m}\n" for m in loaded))

    for name in ("proc", "sys", "dev", "tmp", "root", "run", "var/run", "mnt"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    if os.geteuid() == 0:
        # The kernel's built-in initramfs has /dev/console too; this one is belt and braces.
        os.mknod(root / "dev" / "console", stat.S_IFCHR | 0o600, os.makedev(5, 1))
    init = root / "init"
    init.write_bytes(init_script())
    init.chmod(0o755)
    return loaded


def _write_initramfs(root: Path, out: Path) -> None:
    """Pack root as a newc cpio archive (owned by root) and gzip it into out."""
    if shutil.which("cpio") is None:
        raise SetupError("cpio is not installed: apt-get install cpio")
    names: list[str] = ["."]  # the root entry: the kernel chmods / to its mode (0755)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            names.append(rel)
        # os.walk lists symlinks to directories in dirnames but never enters them.
        names.extend(
            os.path.normpath(os.path.join(rel, d))
            for d in dirnames
            if os.path.islink(os.path.join(dirpath, d))
        )
        names.extend(os.path.normpath(os.path.join(rel, f)) for f in sorted(filenames))
    listing = "".join(f"{n}\0" for n in dict.fromkeys(names)).encode()
    proc = subprocess.run(
        ["cpio", "--null", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
        cwd=root,
        input=listing,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SetupError(f"cpio failed: {proc.stderr.decode(errors='replace').strip()}")
    with gzip.open(out, "wb", compresslevel=6) as f:
        f.write(proc.stdout)


# ---------------------------------------------------------------------------------------
# cache


def _load_cached(final: Path, digest: str) -> GuestImage | None:
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


def _remove_stale_builds(cache_dir: Path) -> None:
    """Delete temp build dirs that crashed builds left behind (older than an hour)."""
    now = time.time()
    for tmp in cache_dir.glob(".build-*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_BUILD_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def build_image(
    cache_dir: Path, log: Callable[[str], None] = lambda s: None, force: bool = False
) -> GuestImage:
    """Return the cached guest image for the current inputs, building it first if needed."""
    started = time.monotonic()
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)

    log("image: resolving inputs")
    kernel_name, kernel_version_deb = _kernel_package(cache_dir, log)
    userland = _collect_userland(log)
    hashes = _hash_userland(userland)
    init_sh = init_script()
    digest = compute_digest(f"{kernel_name}={kernel_version_deb}", hashes, init_sh)
    final = cache_dir / digest[:16]
    if not force:
        cached = _load_cached(final, digest)
        if cached is not None:
            log(f"image: cached {final} ({time.monotonic() - started:.1f}s)")
            return cached

    _remove_stale_builds(cache_dir)
    kernel_name, deb_version, deb = _fetch_kernel_deb(cache_dir, log)
    if deb_version != kernel_version_deb:
        digest = compute_digest(f"{kernel_name}={deb_version}", hashes, init_sh)
        final = cache_dir / digest[:16]

    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        log(f"image: unpacking {deb.name}")
        kernel = _extract_kernel(deb, tmp / "kernel")
        log(f"image: staging root (kernel {kernel.version}, plugins {', '.join(userland.plugins)})")
        root = tmp / "root"
        root.mkdir()
        loaded = _stage_root(root, userland, kernel, log)
        out = tmp / "out"
        out.mkdir()
        log("image: packing initramfs (cpio newc + gzip)")
        _write_initramfs(root, out / "initrd.gz")
        shutil.copyfile(kernel.vmlinuz, out / "vmlinuz")
        log("image: extracting vmlinux for PVH boot")
        pvh = _pvh_kernel(kernel.vmlinuz, out / "vmlinux")
        if not pvh:
            log("image: kernel has no PVH entry point, QEMU will boot the bzImage")
        dpdk_version = _dpdk_version()
        meta = {
            "builder_version": BUILDER_VERSION,
            "digest": digest,
            "kernel_version": kernel.version,
            "kernel": "vmlinux" if pvh else "vmlinuz",
            "kernel_package": f"{kernel_name}={deb_version}",
            "dpdk_version": dpdk_version,
            "modules": loaded,
            "plugin_dir": str(userland.plugin_dir),
            "plugins": list(userland.plugins),
            "initrd_bytes": (out / "initrd.gz").stat().st_size,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.monotonic() - started, 2),
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _publish(out, final, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"image: built {final} in {time.monotonic() - started:.1f}s")
    image = _load_cached(final, digest)
    if image is None:
        raise SetupError(f"image build left no valid image in {final}: remove it and retry")
    return image


def _publish(out: Path, final: Path, tmp: Path) -> None:
    """Move a finished image to its final dir by rename, replacing an old one if present."""
    if os.path.lexists(final):
        os.rename(final, tmp / "old")
    try:
        os.rename(out, final)
    except OSError:
        # A concurrent build published the same digest first: keep theirs.
        if not final.is_dir():
            raise
