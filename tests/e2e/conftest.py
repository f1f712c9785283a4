"""End-to-end fixtures: run the real vhostlm (QEMU, testpmd, scapy, namespaces) as root."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vhostlm.testbed.cleanup import leftovers as leftovers
from vhostlm.testbed.cleanup import processes_mentioning as processes_mentioning
from vhostlm.testbed.hugepages import baseline as hugepages_baseline

if TYPE_CHECKING:
    from tests.e2e.live import LiveRun

ROOT = Path(__file__).resolve().parents[2]
# `make test` runs a sample of the long plans (each test says what it samples, README lists
# them); `make test-full` (VHOSTLM_FULL=1) runs every case
FULL = os.environ.get("VHOSTLM_FULL", "") == "1"


# a test of a case `make test` does not sample: deselected there (a sampling choice, not
# a claim that it cannot run here), run under `make test-full`
FULL_ONLY = pytest.mark.full_only


def sampled(every: Sequence[str], sample: Sequence[str]) -> list[str]:
    """`every` under `make test-full`, else `sample` (a subset of it, checked)."""
    missing = sorted(set(sample) - set(every))
    assert not missing, f"sampled cases not in the plan: {missing}"
    return list(every if FULL else sample)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything here is e2e; it needs root unless its module sets NEEDS_ROOT = False.
    Without VHOSTLM_FULL, the tests marked FULL_ONLY are deselected (make test's sample)."""
    if not FULL:
        left_out = [item for item in items if item.get_closest_marker("full_only")]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if not item.get_closest_marker("full_only")]
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


@pytest.fixture(scope="session")
def disk_image() -> Path:
    """The Debian disk image of `vhostlm image disk` (cached: `make test` builds it first
    with `make disk`)."""
    proc = vhostlm("image", "disk", timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"^disk image (\S+) ", proc.stdout, re.M)
    assert found, proc.stdout
    return Path(found[1])
