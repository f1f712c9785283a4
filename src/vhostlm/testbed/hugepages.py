"""Reserving 2 MiB hugepages for a run and giving them back afterwards."""

from __future__ import annotations

import json
from pathlib import Path

from vhostlm.errors import UsageError
from vhostlm.rundir import RUNTIME_ROOT

NR_PATH = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
FREE_PATH = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
RESV_PATH = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages")
PAGE_MB = 2


def mem_available_mb() -> int:
    """MemAvailable from /proc/meminfo, in MiB: the most the pool could grow by."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def free_pages() -> int:
    """2 MiB pages free right now."""
    return int(FREE_PATH.read_text())


def total_pages() -> int:
    """2 MiB pages in the pool."""
    return int(NR_PATH.read_text())


def check_available(pages: int) -> None:
    """UsageError, before anything starts, when `pages` cannot possibly be had."""
    free = free_pages()
    can = free + mem_available_mb() // PAGE_MB
    if pages > can:
        raise UsageError(
            f"too few hugepages: the run needs {pages} free 2 MiB pages ({pages * PAGE_MB} MiB) "
            f"and at most {can} can be had; lower --guest-mem or free memory"
        )


def unclaimed_pages() -> int:
    """Free pages that no mapping has reserved yet (another run's guests may hold some)."""
    return free_pages() - int(RESV_PATH.read_text())


def reserve(pages: int) -> int:
    """Grow the pool by `pages` for this run; return how many were added (to give back).

    Adding the run's own pages, rather than counting on free ones, keeps concurrent runs
    from counting the same free pages twice. Raises UsageError when the kernel cannot
    provide them and the pool has too few unclaimed pages.
    """
    check_available(pages)
    before = total_pages()
    NR_PATH.write_text(str(before + pages))
    added = total_pages() - before
    got = unclaimed_pages()
    if got < pages:
        NR_PATH.write_text(str(max(0, total_pages() - added)))
        raise UsageError(
            f"too few hugepages: the run needs {pages} free 2 MiB pages and the kernel could "
            f"provide only {got}; free some memory (or lower --guest-mem) and retry"
        )
    return added


def release(added: int) -> None:
    """Shrink the pool by the pages a run added (never below zero)."""
    if added > 0:
        NR_PATH.write_text(str(max(0, total_pages() - added)))


def baseline() -> int:
    """The pool less the pages that runs in progress added (their lab.json records them):
    it stays the same across a run even while other runs come and go, so leaks show."""
    others = 0
    for lab in RUNTIME_ROOT.glob("*/lab.json"):
        try:
            others += int(json.loads(lab.read_text()).get("added_pages", 0))
        except (OSError, ValueError):
            continue  # a run that is just ending
    return total_pages() - others
