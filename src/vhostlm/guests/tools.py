"""vhostlm's own guest programs for a user's image: a small read-only drive both QEMUs attach.

A user's image has none of vhostlm's programs. The memory checker is compiled statically
(any x86-64 Linux runs it) and packed into a tar archive that QEMU attaches as a read-only
virtio-blk disk with serial `vhostlm-tools`; after login the guest unpacks it (into
/run/vhostlm, or the first place after it where a program may run) and puts that first on
PATH,
so the checker that runs is always the one this vhostlm ships, never a stale copy in the
image. Both QEMUs attach the same bytes: a migration needs the same devices on both sides.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vhostlm.guests.contract import TOOLS_SERIAL
from vhostlm.guests.memcheck import MEMCHECK_BIN
from vhostlm.image.userland import build_memcheck, hash_memcheck

GUEST_DIRS = ("/run/vhostlm", "/dev/shm/vhostlm", "/tmp/vhostlm", "/var/tmp/vhostlm")
"""Where the guest may unpack the drive, tried in turn: the first where the checker runs
(Debian's initramfs-tools mounts /run noexec; the root is the case's disposable overlay)."""

TOOLS_NAME = "vhostlm-tools.tar"


def unpack_command(
    sys_block: str = "/sys/block", dev: str = "/dev", dirs: Sequence[str] = GUEST_DIRS
) -> str:
    """The guest's shell line that finds the drive by its serial, unpacks it into the first
    of `dirs` where the checker then runs, and puts that first on PATH; its output's last
    line is the checker's path (one of `dirs`), or nothing."""
    return (
        f"t=; for d in {sys_block}/vd*; do "
        f'[ "$(cat "$d/serial" 2>/dev/null)" = {TOOLS_SERIAL} ] && t="{dev}/${{d##*/}}"; done; '
        f"for x in {' '.join(dirs)}; do "
        f'mkdir -p "$x" 2>/dev/null && tar -xf "$t" -C "$x" 2>/dev/null && '
        f'"$x/{MEMCHECK_BIN}" --help >/dev/null 2>&1 && break; x=; done; '
        f'[ -n "$x" ] && export PATH="$x:$PATH" && echo "$x/{MEMCHECK_BIN}"'
        "; true"
    )


UNPACK = unpack_command()


def tools_digest() -> str:
    """What the drive's bytes depend on: the checker's source and toolchain."""
    h = hashlib.sha256()
    for key, value in sorted(hash_memcheck().items()):
        h.update(f"{key} {value}\n".encode())
    return h.hexdigest()


def build_tools_disk(cache_dir: Path) -> Path:
    """The tar drive (cached in `cache_dir` by its inputs); built atomically when missing."""
    final = cache_dir / tools_digest()[:16] / TOOLS_NAME
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".build-") as tmp:
        binary = build_memcheck(Path(tmp) / MEMCHECK_BIN)
        archive = Path(tmp) / TOOLS_NAME
        with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as tar:
            info = tar.gettarinfo(str(binary), arcname=MEMCHECK_BIN)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0  # the same bytes for the same inputs
            with binary.open("rb") as f:
                tar.addfile(info, f)
        pad_to_sector(archive)
        os.replace(archive, final)
    return final


def pad_to_sector(path: Path) -> None:
    """A block device's size is whole 512-byte sectors: pad the file with zeros (tar's
    end-of-archive blocks are zeros, so the archive reads the same)."""
    size = path.stat().st_size
    if size % 512:
        with path.open("ab") as f:
            f.write(b"\0" * (512 - size % 512))


def members(path: Path) -> list[str]:
    """The names in a tools drive (for checks and tests)."""
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:
        return tar.getnames()
