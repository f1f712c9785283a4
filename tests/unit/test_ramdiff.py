"""The RAM comparison of --verify-ram, on two real processes that each hold a guest-RAM memfd.

Each child creates a memfd named "mem" (as QEMU's memory-backend-memfd does), fills it with
the same pattern, changes the pages it is told to, and waits; the comparison then reads both
through /proc/<pid>/fd exactly as it reads two QEMUs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from vhostlm.errors import SetupError
from vhostlm.integrity.ramdiff import PAGE, RamSide, compare, guest_physical
from vhostlm.nodes.local import LocalNode

SIZE = 8 << 20
CHILD = r"""
import mmap, os, sys
size = int(sys.argv[1])
fd = os.memfd_create("mem")
os.ftruncate(fd, size)
mem = mmap.mmap(fd, size)
for off in range(0, size, 4096):
    mem[off:off + 8] = off.to_bytes(8, "little")
for page in sys.argv[2:]:
    off = int(page) * 4096 + 100
    mem[off] ^= 0xFF
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def holder(procs: list[subprocess.Popen[str]], *pages: int) -> RamSide:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(SIZE), *map(str, pages)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return RamSide(f"vm{len(procs)}", LocalNode("here"), sys.executable, proc.pid, SIZE)


def test_identical_ram_has_no_differing_page(holders: list[subprocess.Popen[str]]) -> None:
    diff = compare(holder(holders), holder(holders))
    assert diff.pages_differ == 0 and diff.samples == [] and diff.failure() is None
    assert diff.compared_mb == 8


def test_each_changed_page_is_found_at_its_address(holders: list[subprocess.Popen[str]]) -> None:
    # pages in two different 2 MiB chunks, and two neighbours in one chunk
    diff = compare(holder(holders), holder(holders, 3, 700, 701))
    assert diff.pages_differ == 3
    assert [s["offset"] for s in diff.samples] == [3 * PAGE, 700 * PAGE, 701 * PAGE]
    assert diff.samples[0]["gpa_hex"] == "0x3000"
    why = diff.failure()
    assert why is not None and "3 page(s) of vm2 differ from vm1" in why and "0x3000" in why


def test_a_process_without_guest_ram_is_a_clear_error(holders: list[subprocess.Popen[str]]) -> None:
    other = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE, text=True)
    holders.append(other)  # type: ignore[arg-type]
    lonely = RamSide("plain", LocalNode("here"), sys.executable, other.pid, SIZE)
    with pytest.raises(SetupError, match="reading the guest RAM of plain: .*no guest RAM file"):
        compare(holder(holders), lonely)


def test_guest_physical_addresses_skip_the_pci_hole_of_big_guests() -> None:
    assert guest_physical(0x1000, 1 << 30) == 0x1000
    four = 4 << 30
    assert guest_physical(0xBFFF_F000, four) == 0xBFFF_F000
    assert guest_physical(0xC000_0000, four) == 1 << 32  # RAM above 3 GiB moves above 4 GiB
