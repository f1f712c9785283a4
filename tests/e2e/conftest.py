"""End-to-end fixtures: run the real vhostlm (QEMU, testpmd, scapy, namespaces) as root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.live import LiveRun

ROOT = Path(__file__).resolve().parents[2]
HUGE_NR = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here is e2e; it needs root unless its module sets NEEDS_ROOT = False."""
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            module = getattr(item, "module", None)
            if getattr(module, "NEEDS_ROOT", True) and os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="end-to-end tests need root"))


def vhostlm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "vhostlm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def load(path: Path) -> dict[str, Any]:
    """A results.json as plain data."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and str(os.getpid()) != proc.name:
            found.append(f"{proc.name}: {cmd[:120]}")
    return found


def leftovers(run_id: str) -> list[str]:
    """Everything of run `run_id` still present: processes, namespaces, sockets, mounts."""
    left = processes_mentioning(f"/run/vhostlm/{run_id}/")
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left += [f"netns {ln.split()[0]}" for ln in out.splitlines() if f"vhostlm-{run_id}-" in ln]
    if Path(f"/run/vhostlm/{run_id}").exists():
        left.append(f"runtime dir /run/vhostlm/{run_id}")
    if f"/run/vhostlm/{run_id}/" in Path("/proc/mounts").read_text():
        left.append("hugetlbfs mount")
    left += [f"hugepage file {p}" for p in Path("/dev/hugepages").glob(f"*{run_id}*")]
    return left


def hugepages_baseline() -> int:
    """The hugepage pool without the pages that other runs in progress have added to it.

    Runs add their own pages and give them back, so this stays the same across a test
    even while other runs (another user, another test session) come and go.
    """
    others = 0
    for lab in Path("/run/vhostlm").glob("*/lab.json"):
        try:
            others += int(json.loads(lab.read_text()).get("added_pages", 0))
        except (OSError, ValueError):
            continue  # a run that is just ending
    return int(HUGE_NR.read_text()) - others


@pytest.fixture
def hugepages_before() -> int:
    """The hugepage pool (less other runs' pages) before the test, to check it was given
    back: compare with `hugepages_baseline()` afterwards."""
    return hugepages_baseline()


@pytest.fixture
def live(hugepages_before: int) -> Iterator[list[LiveRun]]:
    """Runs a test started (tests.e2e.live); afterwards each is gone, nothing left behind."""
    runs: list[LiveRun] = []
    yield runs
    for run in runs:
        run.stop()
        assert run.run_id, run.output()
        assert leftovers(run.run_id) == [], run.output()
    assert hugepages_baseline() == hugepages_before
