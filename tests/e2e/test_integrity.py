"""The migrated guest is whole, or the case says where it is not: real runs on the lab.

The memory checker's fault test writes into the destination QEMU's guest RAM from outside
(its hugetlbfs or memfd file, found among the QEMU's open files) after the switch-over, at
the guest-physical address of the checker's first page, as a backend bug that scribbled
on guest memory would. The case must fail naming that page; nothing else is touched.
"""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path

from tests.e2e.live import LiveRun, steps

CASE = "virtio_net"
HUGE = 2 << 20


def memory_fd(pid: int) -> Path:
    """The /proc path of `pid`'s guest-RAM file (the memory backend's hugetlbfs or memfd)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "qemu_back_mem" in target or target.startswith("/memfd:mem"):
            return fd
    raise AssertionError(f"no guest memory file among QEMU {pid}'s open files")


def scribble(pid: int, gpa: int, length: int = 4096) -> None:
    """Overwrite `length` bytes of guest RAM at guest-physical `gpa` (below 3 GiB on the pc
    machine, an offset into the RAM file) with 0xA5."""
    with open(memory_fd(pid), "r+b") as fh:
        base = gpa - gpa % HUGE
        with mmap.mmap(fh.fileno(), HUGE, offset=base) as mem:
            mem[gpa - base : gpa - base + length] = b"\xa5" * length


def test_seed_case_checks_payloads_pages_and_logs(tmp_path: Path, live: list[LiveRun]) -> None:
    """A passing run proves the guest whole: payloads checked, pages checked, logs clean."""
    run = LiveRun(tmp_path / "run", "--case", CASE)
    live.append(run)
    assert run.finish() == 0, run.output()
    case = run.case()
    integrity = case["integrity"]
    assert integrity["checks"] == ["payload", "memory", "anomalies"]
    # every answered probe's payload was checked, against the replies the outage counts
    assert integrity["payload_checked"] >= case["measure"]["replies"] > 0
    assert integrity["payload_corrupt"] == integrity["payload_foreign"] == 0
    assert integrity["memcheck_mb"] == 1024 // 4
    assert integrity["pages_checked"] == 1024 // 4 * 256  # every 4 KiB page of the region
    assert integrity["memcheck_scans"] >= 1 and integrity["pages_bad"] == 0
    assert steps(case)["guest_intact"]["verdict"] == "pass"
    assert not [a for a in integrity["anomalies"] if a["severity"] == "fatal"]


def test_destination_memory_scribbled_on_after_the_switch_over(
    tmp_path: Path, live: list[LiveRun]
) -> None:
    """Traffic flows again, yet the case fails naming the page that was overwritten."""
    out = tmp_path / "run"
    run = LiveRun(out, "--case", CASE)
    live.append(run)
    run.wait_for(f"{CASE}: receives_after_migration")
    ready = (out / "logs" / f"memcheck-{CASE}-host.log").read_text()
    found = re.search(r"VHLMC ready .*first_gpa=0x([0-9a-f]+)", ready)
    assert found is not None and int(found[1], 16) > 0, ready
    gpa = int(found[1], 16)
    scribble(run.pid_of("qemu-system-x86_64", "-incoming"), gpa)
    assert run.finish() == 1, run.output()
    case = run.case()
    s = steps(case)
    assert s["receives_after_migration"]["verdict"] == "pass"  # packets alone say all is well
    assert s["guest_intact"]["verdict"] == "fail"
    assert case["integrity"]["pages_bad"] >= 1
    bad = case["integrity"]["bad_pages"][0]
    assert bad["page"] == 0 and bad["gpa"] == gpa and bad["vm"] == f"{CASE}-backup"
    assert case["reason"].startswith(
        f"guest_intact: guest memory: {case['integrity']['pages_bad']}"
    )
    assert f"guest-physical {gpa:#x}" in case["reason"]
