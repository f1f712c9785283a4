"""The initramfs: /init, the mount points and console of the root, and its gzipped newc cpio."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from importlib import resources
from pathlib import Path

from vhostlm.errors import SetupError


def init_script() -> bytes:
    """Content of the guest's /init (init.sh, shipped as package data)."""
    return resources.files("vhostlm.image").joinpath("init.sh").read_bytes()


def add_skeleton(root: Path) -> None:
    """Add the mount points, /dev/console (as root) and /init to a staged root."""
    for name in ("proc", "sys", "dev", "tmp", "root", "run", "var/run", "mnt"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    if os.geteuid() == 0:
        # The kernel's built-in initramfs has /dev/console too; this one is belt and braces.
        os.mknod(root / "dev" / "console", stat.S_IFCHR | 0o600, os.makedev(5, 1))
    init = root / "init"
    init.write_bytes(init_script())
    init.chmod(0o755)


def write_initramfs(root: Path, out: Path) -> None:
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
