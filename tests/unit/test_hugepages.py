"""The hugepage pool shared by runs: reservations, releases and the ledger on a fake sysfs.

The kernel is simulated by `FakeKernel` (its nr/free/resv/surplus files, the most pages it
can allocate, guests taking and freeing pages); the lock and the ledger are the real ones,
raced for real by processes.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vhostlm import rundir
from vhostlm.errors import UsageError
from vhostlm.testbed import hugepages
from vhostlm.testbed.hugepages import HugepagePool

FORK = multiprocessing.get_context("fork")
FILES = ("nr_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages")


def lock_held(path: Path) -> bool:
    """True when someone holds the flock on `path` (another open file, even of this process)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class FakeKernel(HugepagePool):
    """A pool whose nr_hugepages writes behave as the kernel's: growing turns surplus pages
    into pool pages, then allocates fresh ones up to `capacity`; shrinking frees only free,
    unreserved pages, and pages in use beyond the new size become surplus."""

    def __init__(self, root: Path, capacity: int = 100_000, base: int = 0, delay: float = 0.0):
        super().__init__(
            sysfs=root / "sys",
            ledger=root / "ledger",
            runtime_root=root / "run",
            meminfo=root / "meminfo",
            mounts=root / "mounts",
        )
        self.delay = delay
        self.writes = 0
        if not self.sysfs.exists():
            self.sysfs.mkdir(parents=True)
            self.state(nr=base, free=base, resv=0, surplus=0)
            (self.sysfs / "capacity").write_text(str(capacity))
            self.meminfo.write_text(f"MemTotal: 1 kB\nMemAvailable: {capacity * 2048} kB\n")
            self.mounts.write_text("proc /proc proc rw 0 0\n")

    def state(self, **values: int) -> dict[str, int]:
        """Set some counters (nr, free, resv, surplus); return them all."""
        for key, value in values.items():
            (self.sysfs / f"{key}_hugepages").write_text(str(value))
        return {name.split("_")[0]: self._read(name) for name in FILES}

    def set_pages(self, count: int) -> None:
        """The kernel's set_max_huge_pages, in short (and it checks the caller holds the lock)."""
        assert lock_held(self.ledger / "lock"), "nr_hugepages written without the lock"
        s = self.state()
        capacity = int((self.sysfs / "capacity").read_text())
        nr, free, resv, surplus = s["nr"], s["free"], s["resv"], s["surplus"]
        if self.delay:
            time.sleep(self.delay * random.random())  # widen the window a race would hit
        persistent = nr - surplus
        if count > persistent:
            back = min(surplus, count - persistent)
            surplus -= back
            persistent += back
            fresh = max(0, min(count - persistent, capacity - nr))
            nr += fresh
            free += fresh
        else:  # never below the pages in use or reserved; those beyond `count`: surplus
            floor = max(count, nr - free + resv)
            drop = max(0, persistent - floor)
            nr -= drop
            free -= drop
            persistent -= drop
            surplus += max(0, persistent - count)
        self.writes += 1
        self.state(nr=nr, free=free, resv=resv, surplus=surplus)

    def take(self, pages: int) -> None:
        """A guest or testpmd maps and touches `pages` (DPDK's 'No free hugepages' if not)."""
        free = self.free()
        if free < pages:
            raise AssertionError(f"EAL: No free 2048 kB hugepages: {free} free, {pages} wanted")
        self.state(free=free - pages)

    def give(self, pages: int) -> None:
        """`pages` in use are freed: surplus ones leave the pool, the others become free."""
        s = self.state()
        gone = min(s["surplus"], pages)
        self.state(nr=s["nr"] - gone, surplus=s["surplus"] - gone, free=s["free"] + pages - gone)


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


def entries(pool: HugepagePool) -> dict[str, int]:
    """run id -> pages, of every ledger file."""
    return {e.run_id: e.pages for e in pool.entries().values()}


def test_a_reserves_b_reserves_a_releases_b_releases(kernel: FakeKernel) -> None:
    """Each run grows the pool by its own need, and both runs' guests get their pages even
    when they start only after the other run reserved (the collision of issue 16)."""
    assert kernel.reserve(1300, "a") == 1300
    assert kernel.total() == 1300
    assert kernel.reserve(1300, "b") == 1300
    assert kernel.total() == 2600
    assert entries(kernel) == {"a": 1300, "b": 1300}
    kernel.take(1300)  # A's guests and testpmds start
    kernel.take(1300)  # B's too: no "No free hugepages"
    assert kernel.baseline() == 0
    kernel.give(1300)  # A's programs end, then its lab goes
    kernel.release("a")
    assert kernel.total() == 1300 and kernel.state()["surplus"] == 0
    assert entries(kernel) == {"b": 1300}
    kernel.give(1300)
    kernel.release("b")
    assert kernel.state() == {"nr": 0, "free": 0, "resv": 0, "surplus": 0}
    assert entries(kernel) == {}
    assert not (kernel.ledger / "base").exists()


def test_b_releases_first(kernel: FakeKernel) -> None:
    kernel.reserve(700, "a")
    kernel.reserve(300, "b")
    kernel.take(300)  # B's programs
    kernel.give(300)
    kernel.release("b")
    assert kernel.total() == 700 and kernel.free() == 700  # A's pages are all still there
    kernel.take(700)  # A's programs start only now
    kernel.give(700)
    kernel.release("a")
    assert kernel.total() == 0


def test_release_never_takes_the_pages_other_runs_hold(kernel: FakeKernel) -> None:
    """The kernel keeps pages in use when the pool shrinks, not whose free pages they are:
    a run whose hugetlbfs is still mounted (umount failed, a program of it still runs) keeps
    its share, so B's free pages stay; the `lab down` that unmounts it releases it."""
    runtime = kernel.runtime_root / "a"
    runtime.mkdir(parents=True)
    kernel.reserve(500, "a")
    kernel.reserve(400, "b")
    kernel.take(500)  # A's programs
    kernel.mounts.write_text(f"hugetlbfs {runtime}/huge hugetlbfs rw,pagesize=2M 0 0\n")
    assert kernel.release("a") is False
    assert kernel.total() == 900 and set(entries(kernel)) == {"a", "b"}
    kernel.take(400)  # B's programs start: its pages are there
    kernel.give(500)  # A's programs end, its hugetlbfs goes
    kernel.mounts.write_text("")
    assert kernel.release("a") is True
    assert kernel.state() == {"nr": 400, "free": 0, "resv": 0, "surplus": 0}
    kernel.give(400)
    kernel.release("b")
    assert kernel.total() == 0


def test_shrinking_below_pages_in_use_makes_them_surplus(kernel: FakeKernel) -> None:
    """What the fake kernel does (as the real one): pages in use survive a shrink as surplus
    and leave the pool when freed; free pages go at once."""
    kernel.reserve(100, "a")
    kernel.take(60)
    kernel.release("a")
    assert kernel.state() == {"nr": 60, "free": 0, "resv": 0, "surplus": 60}
    kernel.give(60)
    assert kernel.state() == {"nr": 0, "free": 0, "resv": 0, "surplus": 0}


def test_the_machines_own_pool_is_restored_when_the_last_run_leaves(tmp_path: Path) -> None:
    """A machine with a pool of its own (10 pages, 4 in use by someone else) gets it back."""
    kernel = FakeKernel(tmp_path, base=10)
    kernel.take(4)
    kernel.reserve(100, "a")
    assert kernel.total() == 110
    kernel.reserve(50, "b")
    assert kernel.total() == 160
    assert kernel.baseline() == 10
    kernel.release("a")
    assert kernel.total() == 60
    kernel.release("b")
    assert kernel.state() == {"nr": 10, "free": 6, "resv": 0, "surplus": 0}
    # The base is taken afresh by the next first run (the admin may have changed it).
    kernel.reserve(5, "c")
    assert kernel.total() == 15
    kernel.release("c")
    assert kernel.total() == 10


def reserve_and_die(pool: HugepagePool, pages: int, run_id: str) -> None:
    """A run killed (kill -9) after it reserved: no release, no clean-up."""
    pool.reserve(pages, run_id)
    os._exit(0)


def dead_run(pool: HugepagePool, pages: int, run_id: str) -> None:
    proc = FORK.Process(target=reserve_and_die, args=(pool, pages, run_id))
    proc.start()
    proc.join(10)
    assert proc.exitcode == 0


def test_a_dead_run_without_runtime_dir_is_dropped(kernel: FakeKernel) -> None:
    """A run that died without releasing, its runtime directory gone: its share is ignored
    (a leak baseline() shows) and the next reservation or release removes it."""
    kernel.reserve(100, "a")
    dead_run(kernel, 200, "dead")
    assert kernel.total() == 300
    assert kernel.baseline() == 200  # the dead run's pages are not a live run's: they show
    assert set(entries(kernel)) == {"a", "dead"}  # reading leaves the ledger alone
    kernel.reserve(50, "b")
    assert set(entries(kernel)) == {"a", "b"}
    assert kernel.total() == 150  # the dead run's share is gone; A's and B's are there
    kernel.release("a")
    kernel.release("b")
    assert kernel.total() == 0


def test_a_dead_last_run_gives_the_base_back_to_the_next(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path, base=8)
    dead_run(kernel, 200, "dead")
    assert kernel.total() == 208
    kernel.release("someone-else")  # any release (e.g. `lab down` of another id) settles it
    assert kernel.total() == 8 and entries(kernel) == {}
    assert not (kernel.ledger / "base").exists()
    dead_run(kernel, 200, "dead2")
    kernel.reserve(10, "a")  # the base restored first, then A's share on top
    assert kernel.total() == 18
    kernel.release("a")
    assert kernel.total() == 8


def test_a_dead_run_whose_lab_remains_keeps_its_pages_until_lab_down(kernel: FakeKernel) -> None:
    """`vhostlm lab up` exits and leaves its lab; a kill -9'd run leaves its mount holding
    pages: while the runtime directory is there the share stays, `lab down` releases it."""
    (kernel.runtime_root / "standing").mkdir(parents=True)
    dead_run(kernel, 200, "standing")
    kernel.reserve(100, "a")
    assert kernel.total() == 300
    assert kernel.baseline() == 0
    kernel.release("a")
    assert kernel.total() == 200 and set(entries(kernel)) == {"standing"}
    kernel.release("standing")  # lab down
    assert kernel.total() == 0 and entries(kernel) == {}


def test_a_pid_reused_by_another_process_is_not_the_run(kernel: FakeKernel) -> None:
    kernel.reserve(100, "a")
    entry = json.loads((kernel.ledger / "a.json").read_text())
    entry["starttime"] += 1  # the same pid, but not the process that reserved
    (kernel.ledger / "a.json").write_text(json.dumps(entry))
    assert kernel.baseline() == 100
    kernel.release("other")
    assert kernel.total() == 0 and entries(kernel) == {}


def test_a_reservation_that_cannot_be_had(tmp_path: Path) -> None:
    """UsageError naming the pages needed and available; the other runs' pages stay."""
    kernel = FakeKernel(tmp_path, capacity=2000)
    kernel.reserve(1300, "a")
    with pytest.raises(UsageError) as err:
        kernel.reserve(1300, "b")
    text = str(err.value)
    assert "needs 1300 free 2 MiB pages (2600 MiB)" in text
    assert "only 700 can be had" in text
    assert "(other runs hold 1300)" in text
    assert kernel.total() == 1300 and entries(kernel) == {"a": 1300}
    kernel.take(1300)  # A's pages are all there
    kernel.give(1300)
    kernel.release("a")
    assert kernel.total() == 0


def test_a_first_reservation_that_cannot_be_had_leaves_no_ledger(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path, capacity=100, base=20)
    with pytest.raises(UsageError, match=r"needs 500 free .* only 100 can be had; free some"):
        kernel.reserve(500, "a")
    assert kernel.total() == 20 and entries(kernel) == {}
    assert not (kernel.ledger / "base").exists()


def test_spare_pages_of_the_pool_cover_what_the_kernel_cannot_add(tmp_path: Path) -> None:
    """As before the ledger: a pool sized by the admin serves a run the kernel cannot grow
    for; the run gives back only what was added for it."""
    kernel = FakeKernel(tmp_path, capacity=1500, base=1400)
    assert kernel.reserve(1300, "a") == 100
    assert kernel.total() == 1500
    kernel.release("a")
    assert kernel.total() == 1400


def test_spare_pages_another_run_counts_on_are_not_spare(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path, capacity=1500, base=1400)
    kernel.reserve(1300, "a")  # 100 added, 1200 of the admin's pool: A's until it leaves
    with pytest.raises(UsageError, match="needs 1300 free .* only 200 can be had"):
        kernel.reserve(1300, "b")
    assert kernel.total() == 1500
    kernel.take(1300)
    kernel.release("a")


def test_surplus_pages_in_use_do_not_count_as_the_runs(kernel: FakeKernel) -> None:
    """Pages still used beyond the pool (surplus) are turned into pool pages first when it
    grows: the run still gets its own number of free pages."""
    kernel.state(nr=30, free=0, surplus=30)  # e.g. a killed run's guest still maps them
    assert kernel.reserve(100, "a") == 100
    assert kernel.free() == 100
    kernel.take(100)
    kernel.give(100)
    kernel.release("a")
    assert kernel.persistent() == 0


def test_reserving_again_replaces_the_runs_entry(kernel: FakeKernel) -> None:
    kernel.reserve(100, "a")
    kernel.reserve(40, "b")
    kernel.reserve(60, "a")
    assert kernel.total() == 100 and entries(kernel) == {"a": 60, "b": 40}
    kernel.release("a")
    kernel.release("a")  # idempotent
    assert kernel.total() == 40
    kernel.release("b")
    assert kernel.total() == 0


def test_check_available_leaves_out_other_runs_pages(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path, capacity=2000, base=100)
    kernel.check_available(2000 + 100 - 100)  # free 100 + 2000 pages of memory (fake)
    with pytest.raises(UsageError, match=r"needs 2101 free .* at most 2100 can be had; lower"):
        kernel.check_available(2101)
    kernel.reserve(50, "a")
    kernel.meminfo.write_text("MemAvailable: 2048000 kB\n")  # 1000 pages
    kernel.check_available(1100)  # 150 free, 50 of them A's: 100 + 1000
    with pytest.raises(UsageError, match=r"at most 1100 can be had \(other runs hold 50\)"):
        kernel.check_available(1101)


def test_reading_needs_no_ledger(tmp_path: Path) -> None:
    """baseline() and check_available() before any run: no ledger directory is made."""
    kernel = FakeKernel(tmp_path, base=7)
    assert kernel.baseline() == 7
    kernel.check_available(7)
    assert not kernel.ledger.exists()


def test_bad_run_ids_are_refused(kernel: FakeKernel) -> None:
    for bad in ("", "../x", ".hidden"):
        with pytest.raises(ValueError):
            kernel.reserve(1, bad)
    assert kernel.total() == 0


def test_the_module_functions_use_the_module_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paths are module constants a test can point at a fake sysfs (no kernel behind
    these files: the free count is set by hand)."""
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    for name, value in (("nr_hugepages", 0), ("free_hugepages", 500), ("resv_hugepages", 0)):
        (sysfs / name).write_text(str(value))
    (tmp_path / "meminfo").write_text("MemAvailable: 1024 kB\n")
    monkeypatch.setattr(hugepages, "SYSFS_DIR", sysfs)
    monkeypatch.setattr(hugepages, "LEDGER_DIR", tmp_path / "ledger")
    monkeypatch.setattr(hugepages, "MEMINFO_PATH", tmp_path / "meminfo")
    monkeypatch.setattr(rundir, "RUNTIME_ROOT", tmp_path / "run")
    assert hugepages.pool().runtime_root == tmp_path / "run"
    hugepages.check_available(500)
    assert hugepages.reserve(300, "a") == 300
    assert (sysfs / "nr_hugepages").read_text() == "300"
    assert hugepages.total_pages() == 300 and hugepages.free_pages() == 500
    assert hugepages.baseline() == 0
    hugepages.release("a")
    assert (sysfs / "nr_hugepages").read_text() == "0"
    assert hugepages.mem_available_mb() == 1


# Processes racing on the lock for real.


def send(queue: Any, item: object) -> None:
    """Put `item` and wait until it is written (os._exit would drop it otherwise)."""
    queue.put(item)
    queue.close()
    queue.join_thread()


def hold(pool: HugepagePool, pages: int, run_id: str, go: Callable[[], object], done: Any,
         release: Any) -> None:  # fmt: skip
    """A run: reserve when all are ready, stay alive until told, then release."""
    go()
    try:
        added = pool.reserve(pages, run_id)
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        send(done, (run_id, repr(exc)))
        os._exit(1)
    send(done, (run_id, added))
    release.wait(30)
    pool.release(run_id)
    os._exit(0)


def test_many_processes_reserving_at_once_add_up(tmp_path: Path) -> None:
    """Sixteen runs reserve at the same moment and release at the same moment: the pool is
    the base plus the sum of all while they live, and the base once all have left."""
    kernel = FakeKernel(tmp_path, base=5, delay=0.003)
    sizes = {f"run{i}": 10 + 7 * i for i in range(16)}
    barrier = FORK.Barrier(len(sizes))
    done = FORK.Queue()
    release = FORK.Event()
    procs = [
        FORK.Process(target=hold, args=(kernel, pages, run_id, barrier.wait, done, release))
        for run_id, pages in sizes.items()
    ]
    for proc in procs:
        proc.start()
    results = dict(done.get(timeout=60) for _ in procs)
    assert results == sizes  # every run got all of its pages added
    assert kernel.total() == 5 + sum(sizes.values())
    assert kernel.free() == 5 + sum(sizes.values())
    assert entries(kernel) == sizes
    assert kernel.baseline() == 5
    release.set()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert kernel.state() == {"nr": 5, "free": 5, "resv": 0, "surplus": 0}
    assert entries(kernel) == {} and not (kernel.ledger / "base").exists()


def churn(pool: HugepagePool, worker: int, rounds: int) -> None:
    """Reserve and release, again and again, with other workers doing the same."""
    rng = random.Random(worker)
    for i in range(rounds):
        pool.reserve(rng.randint(1, 50), f"w{worker}-{i}")
        if rng.random() < 0.5:
            time.sleep(rng.random() * 0.002)
        pool.release(f"w{worker}-{i}")
    os._exit(0)


def test_reservations_and_releases_interleaved_by_many_processes(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path, base=3, delay=0.001)
    kernel.reserve(20, "steady")  # one run stays throughout
    procs = [FORK.Process(target=churn, args=(kernel, w, 15)) for w in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    assert kernel.total() == 23 and entries(kernel) == {"steady": 20}
    kernel.release("steady")
    assert kernel.total() == 3


def test_the_lock_is_held_around_every_pool_change(kernel: FakeKernel) -> None:
    """While another process holds the lock, a reservation waits for it."""
    kernel.ledger.mkdir(parents=True)
    fd = os.open(kernel.ledger / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = FORK.Queue()

    def reserve() -> None:
        os.close(fd)  # the forked copy of the test's lock: the test's alone holds it
        send(done, kernel.reserve(10, "a"))
        os._exit(0)

    proc = FORK.Process(target=reserve)
    proc.start()
    time.sleep(0.3)
    assert done.empty() and kernel.total() == 0
    os.close(fd)
    assert done.get(timeout=10) == 10
    proc.join(10)
    assert kernel.total() == 10
