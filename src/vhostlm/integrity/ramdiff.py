"""Every page of guest RAM compared between source and destination at the switch-over.

With --verify-ram the destination QEMU starts with `-S`: once the migration has completed
it holds the guest paused, and neither vhost backend writes guest memory (the source's
rings were stopped with the source, the destination's start when the guest runs). The two
QEMUs' RAM must then be identical page for page; a page that differs is one the migration
missed, found before the destination guest runs a single instruction. Each node hashes its
own QEMU's RAM file (hugetlbfs or memfd, found among the QEMU's open files) with a small
script, so the comparison works across machines: chunk digests first, pages only where a
chunk differs.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vhostlm.errors import SetupError
from vhostlm.nodes.base import Node

PAGE = 4096
CHUNK = 2 << 20  # a hugepage: the hugetlbfs file maps in these
SAMPLES = 16
LOW_MEM = 0xC000_0000  # the pc machine's RAM below 4 GiB once the guest has 3.5 GiB or more
PC_SPLIT = 0xE000_0000

# Run by the node's python: digests of QEMU `pid`'s guest RAM (`size` bytes), one line per
# chunk, or with chunk indexes after the size, one line per page of those chunks.
SCRIPT = r"""
import mmap, os, sys, zlib
pid, size, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
path = None
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    if "qemu_back_mem" in target or target.startswith("/memfd:mem"):
        path = f"/proc/{pid}/fd/{fd}"
        break
if path is None:
    sys.exit(f"no guest RAM file among the open files of QEMU {pid}")
with open(path, "rb") as fh:
    flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if len(sys.argv) == 4 else 0)
    mem = mmap.mmap(fh.fileno(), size, flags=flags, prot=mmap.PROT_READ)
    view = memoryview(mem)
    def digest(off, length):
        part = view[off:off + length]
        return f"{zlib.crc32(part):08x}{zlib.adler32(part):08x}"
    out = []
    if len(sys.argv) == 4:  # CRC-32 per chunk (a differing chunk goes unseen at 2**-32)
        for off in range(0, size, chunk):
            out.append(f"{zlib.crc32(view[off:off + chunk]):08x}")
    else:
        for index in sys.argv[4:]:
            base = int(index) * chunk
            for off in range(base, min(base + chunk, size), 4096):
                out.append(f"{off} {digest(off, 4096)}")
    print("\n".join(out))
    del view
"""


@dataclass
class RamDiff:
    """One switch-over's comparison: how much was compared, what differed, how long it took."""

    source: str
    destination: str
    compared_mb: int = 0
    pages_differ: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)  # page offset, gpa
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain values for results.json."""
        return {
            "source": self.source,
            "destination": self.destination,
            "compared_mb": self.compared_mb,
            "pages_differ": self.pages_differ,
            "samples": self.samples,
            "seconds": self.seconds,
        }

    def failure(self) -> str | None:
        """One line naming the first differing page, or None when the RAM is identical."""
        if not self.pages_differ:
            return None
        first = self.samples[0]
        return (
            f"guest RAM: {self.pages_differ} page(s) of {self.destination} differ from "
            f"{self.source} at the switch-over, the first at guest-physical {first['gpa_hex']}: "
            f"pages the migration missed"
        )


def guest_physical(offset: int, size: int) -> int:
    """The guest-physical address of RAM-file offset `offset` on QEMU's pc machine."""
    low = LOW_MEM if size >= PC_SPLIT else size
    return offset if offset < low else offset - low + (1 << 32)


@dataclass(frozen=True)
class RamSide:
    """One QEMU's RAM as its node sees it."""

    name: str
    node: Node
    python: str
    pid: int
    size: int

    def digests(self, chunks: list[int] | None = None) -> list[str]:
        """The chunk digests, or the page lines ("offset digest") of `chunks`."""
        argv = [self.python, "-c", SCRIPT, str(self.pid), str(self.size), str(CHUNK)]
        out = self.node.execute([*argv, *(str(c) for c in chunks or [])])
        if out.status != 0:
            why = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:]
            raise SetupError(f"reading the guest RAM of {self.name}: {why}")
        return out.stdout.split("\n") if out.stdout.strip() else []


def _both(src: RamSide, dst: RamSide, chunks: list[int] | None) -> tuple[list[str], list[str]]:
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(src.digests, chunks), pool.submit(dst.digests, chunks)
        return a.result(), b.result()


def compare(src: RamSide, dst: RamSide) -> RamDiff:
    """Compare the two QEMUs' RAM, chunk by chunk, then page by page where chunks differ."""
    t0 = time.monotonic()
    diff = RamDiff(src.name, dst.name, compared_mb=src.size >> 20)
    a, b = _both(src, dst, None)
    if len(a) != len(b):
        raise SetupError(f"guest RAM of {src.name} and {dst.name} differ in size")
    chunks = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if chunks:
        pa, pb = _both(src, dst, chunks)
        for line_a, line_b in zip(pa, pb, strict=False):
            if line_a != line_b:
                diff.pages_differ += 1
                if len(diff.samples) < SAMPLES:
                    offset = int(line_a.split()[0])
                    gpa = guest_physical(offset, src.size)
                    diff.samples.append({"offset": offset, "gpa": gpa, "gpa_hex": f"{gpa:#x}"})
    diff.seconds = round(time.monotonic() - t0, 3)
    return diff
