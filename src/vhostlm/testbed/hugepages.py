"""Reserving 2 MiB hugepages for a run and giving them back afterwards, safely across runs.

Every run on this machine shares one kernel pool (nr_hugepages). Two runs at once used to
collide: each grew the pool by read-modify-write with no lock, and checked "free pages now",
which the other run's not-yet-started guests and testpmds were about to take. Now:

- every change of nr_hugepages happens under an exclusive `flock` on `LEDGER_DIR/lock`;
- a ledger (`LEDGER_DIR/<run id>.json`, one file per run: its pages, what it grew the pool
  by, its pid and start time) says what each live run holds, and `LEDGER_DIR/base` the pool
  the machine had before the first of them arrived;
- the pool is always set to an absolute size, `base + what every live run added`, so a run
  grows it by its own need on top of the others' shares and on release shrinks it by its own
  share only; the last run to leave restores `base`.

The ledger sits beside RUNTIME_ROOT (/run/vhostlm-hugepages), not inside it: everything in
RUNTIME_ROOT is taken for a run's runtime directory (`lab down` removes orphaned ones,
`lab status` lists them). A run's entry counts while its process lives or while its runtime
directory exists: a `vhostlm lab up` lab outlives its process, and a kill -9'd run's mount
still holds its pages until `lab down` (which releases the entry). An entry whose process
and runtime directory are both gone is dead: it is dropped and the pool shrunk. A release
while the run still has a mount under its runtime directory keeps the share: the kernel
never frees pages in use, so shrinking then would free another run's free pages instead.

Per-run hugetlbfs quotas (`min_size=` on the lab's mount) would make the kernel hold each
run's pages, but the pool must still be grown first, and that read-modify-write is the race:
the lock and ledger are needed either way, and they suffice while each run stays within its
budget. (Servers of an SSH testbed are not touched: their pool is checked, not reserved.)

Paths are module constants (a test points them at a fake sysfs in tmp_path) read by
`HugepagePool()`, whose methods do the work; the module functions are what callers use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vhostlm import rundir
from vhostlm.errors import UsageError

SYSFS_DIR = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")
MEMINFO_PATH = Path("/proc/meminfo")
MOUNTS_PATH = Path("/proc/mounts")
LEDGER_DIR = rundir.RUNTIME_ROOT.parent / "vhostlm-hugepages"
PAGE_MB = 2


@dataclass(frozen=True)
class Entry:
    """One run's reservation: `pages` it needs, `added` of them grown into the pool for it."""

    run_id: str
    pages: int
    added: int
    pid: int
    starttime: int | None
    runtime: str

    def alive(self) -> bool:
        """Its process still runs (same pid and start time), or its runtime directory, and
        with it the lab holding the pages, still exists."""
        if self.starttime is not None and rundir.proc_starttime(self.pid) == self.starttime:
            return True
        return bool(self.runtime) and Path(self.runtime).is_dir()


class HugepagePool:
    """The kernel's 2 MiB pool under `sysfs`, shared by runs through the ledger in `ledger`."""

    def __init__(
        self,
        sysfs: Path | None = None,
        ledger: Path | None = None,
        runtime_root: Path | None = None,
        meminfo: Path | None = None,
        mounts: Path | None = None,
    ) -> None:
        self.sysfs = sysfs or SYSFS_DIR
        self.ledger = ledger or LEDGER_DIR
        self.runtime_root = runtime_root or rundir.RUNTIME_ROOT
        self.meminfo = meminfo or MEMINFO_PATH
        self.mounts = mounts or MOUNTS_PATH

    # The kernel's counters.

    def _read(self, name: str) -> int:
        try:
            return int((self.sysfs / name).read_text())
        except FileNotFoundError:
            return 0  # surplus/resv files absent (an old kernel, a fake sysfs)

    def total(self) -> int:
        """nr_hugepages: every page of the pool, surplus ones included."""
        return self._read("nr_hugepages")

    def free(self) -> int:
        """Pages of the pool no one uses yet (some may be reserved by a mapping)."""
        return self._read("free_hugepages")

    def unclaimed(self) -> int:
        """Free pages no mapping has reserved yet."""
        return self.free() - self._read("resv_hugepages")

    def persistent(self) -> int:
        """The pool's own size: surplus pages (in use beyond it) go when they are freed."""
        return self.total() - self._read("surplus_hugepages")

    def set_pages(self, count: int) -> None:
        """Ask the kernel for a pool of `count` pages (it may give fewer; it never frees
        pages in use or reserved: those become surplus). Only ever called under the lock."""
        (self.sysfs / "nr_hugepages").write_text(str(max(0, count)))

    def mem_available_mb(self) -> int:
        """MemAvailable, in MiB: the most the pool could grow by."""
        for line in self.meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
        return 0

    # The ledger.

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive lock every read-modify-write of the pool and ledger takes."""
        self.ledger.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.ledger / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """The lock for a consistent read; none needed (nor taken) before any run reserved,
        so that a user who may not create the ledger can still read the pool."""
        if not self.ledger.is_dir():
            yield
            return
        with self.locked():
            yield

    def _entry_path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"bad run id {run_id!r}")
        return self.ledger / f"{run_id}.json"

    def entries(self) -> dict[str, Entry]:
        """Every entry of the ledger, live or dead (unreadable ones left out)."""
        found: dict[str, Entry] = {}
        for path in sorted(self.ledger.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                found[path.stem] = Entry(
                    run_id=path.stem,
                    pages=int(data["pages"]),
                    added=int(data["added"]),
                    pid=int(data["pid"]),
                    starttime=None if data.get("starttime") is None else int(data["starttime"]),
                    runtime=str(data.get("runtime", "")),
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by a run killed mid-write: nothing to count
        return found

    def _live(self, prune: bool) -> dict[str, Entry]:
        """The live entries; with `prune`, dead ones' files are removed (under the lock)."""
        live: dict[str, Entry] = {}
        for run_id, entry in self.entries().items():
            if entry.alive():
                live[run_id] = entry
            elif prune:
                self._entry_path(run_id).unlink(missing_ok=True)
        if prune:  # unreadable files count for nothing: drop them too
            for path in self.ledger.glob("*.json"):
                if path.stem not in live:
                    path.unlink(missing_ok=True)
        return live

    def _write_entry(self, entry: Entry) -> None:
        tmp = self.ledger / f".{entry.run_id}.tmp"
        tmp.write_text(json.dumps({
            "pages": entry.pages, "added": entry.added, "pid": entry.pid,
            "starttime": entry.starttime, "runtime": entry.runtime, "time": time.time(),
        }))  # fmt: skip
        tmp.replace(self._entry_path(entry.run_id))

    def _base(self) -> int | None:
        try:
            return int(json.loads((self.ledger / "base").read_text())["pages"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _settle(self, live: dict[str, Entry]) -> int:
        """The machine's own pool size: the recorded base while runs hold pages; with none
        left, the recorded base is restored first and the pool as it is now becomes it."""
        base = self._base()
        if base is not None and not live:
            self.set_pages(base)  # the last run left without restoring it (it died)
            (self.ledger / "base").unlink(missing_ok=True)
            base = None
        if base is None:
            base = self.persistent()
            tmp = self.ledger / ".base.tmp"
            tmp.write_text(json.dumps({"pages": base, "time": time.time()}))
            tmp.replace(self.ledger / "base")
        return base

    # What callers use.

    def available(self, pages_of_others: int) -> int:
        """Pages a new run can count on: free ones other live runs may still take left out
        (all of their pages, as some may not be mapped yet), plus what memory could add."""
        return max(0, self.free() - pages_of_others) + self.mem_available_mb() // PAGE_MB

    def check_available(self, pages: int) -> None:
        """UsageError, before anything starts, when `pages` cannot possibly be had."""
        with self.reading():
            others = sum(e.pages for e in self._live(prune=False).values())
            can = self.available(others)
        if pages > can:
            raise UsageError(
                f"too few hugepages: the run needs {pages} free 2 MiB pages "
                f"({pages * PAGE_MB} MiB) and at most {can} can be had"
                + (f" (other runs hold {others})" if others else "")
                + "; lower --guest-mem or free memory"
            )

    def reserve(self, pages: int, run_id: str) -> int:
        """Grow the pool by `pages` for run `run_id` on top of what other live runs hold;
        return how many the kernel added (the rest came from pages the pool had spare).

        Raises UsageError naming the pages needed and available when they cannot be had;
        then the pool and ledger are as before.
        """
        path = self._entry_path(run_id)  # a bad id is refused before anything changes
        with self.locked():
            live = self._live(prune=True)
            live.pop(run_id, None)  # reserving again replaces the run's own entry
            base = self._settle(live)
            others_added = sum(e.added for e in live.values())
            others_pages = sum(e.pages for e in live.values())
            # The kernel turns surplus pages (in use beyond the pool) into pool pages first
            # when it grows: ask for that many more so that `pages` fresh ones arrive.
            surplus = self._read("surplus_hugepages")
            try:
                self.set_pages(base + others_added + pages + surplus)
                added = min(pages, max(0, self.persistent() - base - others_added))
                unclaimed = self.unclaimed()
                if added >= pages:  # the pool grew by the run's own need: it must show free
                    have = min(unclaimed, pages)
                else:  # the rest must be spare: unreserved, and not what other runs may take
                    have = added + max(0, unclaimed - added - others_pages)
                if have < pages:
                    held = f" (other runs hold {others_pages})" if live else ""
                    raise UsageError(
                        f"too few hugepages: the run needs {pages} free 2 MiB pages "
                        f"({pages * PAGE_MB} MiB) and only {have} can be had{held}; "
                        "free some memory (or lower --guest-mem) and retry"
                    )
                pid = os.getpid()
                runtime = str(self.runtime_root / run_id)
                entry = Entry(run_id, pages, added, pid, rundir.proc_starttime(pid), runtime)
                self._write_entry(entry)
            except BaseException:
                path.unlink(missing_ok=True)
                self.set_pages(base + others_added)
                if not live:
                    (self.ledger / "base").unlink(missing_ok=True)
                raise
            return added

    def holds_mounts(self, runtime: str) -> bool:
        """True while a filesystem is mounted under `runtime` (the run's hugetlbfs, whose
        files may still hold pages: `umount` failed, a program of it still runs)."""
        try:
            lines = self.mounts.read_text().splitlines()
        except OSError:
            return False
        points = [line.split()[1] for line in lines if len(line.split()) > 1]
        return any(p == runtime or p.startswith(f"{runtime}/") for p in points)

    def release(self, run_id: str) -> bool:
        """Give back run `run_id`'s share: the pool shrinks to what the other live runs hold
        on top of the base (the base itself once the last run leaves). Idempotent.

        While the run still has a mount under its runtime directory its pages may be in use,
        and shrinking the pool then would free other runs' free pages instead (the kernel
        keeps the pages in use, not whose they are): the share stays, False is returned, and
        the `lab down` that unmounts it releases it.
        """
        with self.locked():
            entry = self.entries().get(run_id)
            if entry is not None and entry.runtime and self.holds_mounts(entry.runtime):
                return False
            self._entry_path(run_id).unlink(missing_ok=True)
            live = self._live(prune=True)
            base = self._base()
            if base is None:
                return True  # no ledger: nothing was reserved through it
            if live:
                self.set_pages(base + sum(e.added for e in live.values()))
            else:
                self.set_pages(base)
                (self.ledger / "base").unlink(missing_ok=True)
            return True

    def baseline(self) -> int:
        """The pool less the pages live runs added: it stays the same across a run even
        while other runs come and go, so a run that leaks its pages shows."""
        with self.reading():
            return self.total() - sum(e.added for e in self._live(prune=False).values())


def pool() -> HugepagePool:
    """This machine's pool (from the module's paths, so a test can point them elsewhere)."""
    return HugepagePool()


def mem_available_mb() -> int:
    """MemAvailable from /proc/meminfo, in MiB: the most the pool could grow by."""
    return pool().mem_available_mb()


def free_pages() -> int:
    """2 MiB pages free right now."""
    return pool().free()


def total_pages() -> int:
    """2 MiB pages in the pool."""
    return pool().total()


def check_available(pages: int) -> None:
    """UsageError, before anything starts, when `pages` cannot possibly be had."""
    pool().check_available(pages)


def reserve(pages: int, run_id: str) -> int:
    """Grow the pool by `pages` for run `run_id`; return how many the kernel added."""
    return pool().reserve(pages, run_id)


def release(run_id: str) -> bool:
    """Give back run `run_id`'s pages, never those of other live runs (False: kept, as its
    hugetlbfs is still mounted)."""
    return pool().release(run_id)


def baseline() -> int:
    """The pool less the pages runs in progress added."""
    return pool().baseline()
