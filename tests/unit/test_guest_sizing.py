"""What the guest reserves per case, the --guest-mem that fits it, and the dirtying load.

The guest's hugepages are its testpmd's: a virtio-pmd case reserves PMD_HUGEPAGES at run
time, a kernel-driver case none. A --guest-mem below what a case needs is refused before
anything starts. The dirtying load must write non-zero data (QEMU sends a zero page as a
marker), checked by running its shell commands for real.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from vhostlm.apps.console import GuestShell
from vhostlm.apps.guest import TestPmdReceiver
from vhostlm.errors import SetupError, UsageError
from vhostlm.guests.base import Driver
from vhostlm.guests.contract import (
    DISK_HUGEPAGES,
    GUEST_BASE_MB,
    GUEST_TESTPMD_MB,
    GUEST_TESTPMD_MBUFS,
    PMD_HUGEPAGES,
    guest_hugepages,
)
from vhostlm.guests.disk import DistroTestPmdReceiver
from vhostlm.guests.initramfs import dirty_load_fill, dirty_load_loop, dirty_load_round
from vhostlm.options import RunOptions, check_guest_mem, guest_mem_needed
from vhostlm.plans.catalog import PLANS
from vhostlm.plans.seed import VIRTIO_NET, VIRTIO_PMD

MIB = 2**20


class ScriptedShell:
    """A guest shell that records commands and answers `cat` of nr_hugepages with `pages`."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 20.0, check: bool = True) -> str:
        """Record `command`; the reservation's read-back gives `pages`."""
        self.commands.append(command)
        return f"{self.pages}\n" if command.startswith("cat /proc/sys/vm/nr_hugepages") else ""


def test_kernel_cases_reserve_no_hugepages_and_pmd_cases_a_few() -> None:
    assert guest_hugepages(pmd=False) == 0
    assert guest_hugepages(pmd=False, disk=True) == 0
    assert guest_hugepages(pmd=True) == PMD_HUGEPAGES
    assert guest_hugepages(pmd=True, disk=True) == DISK_HUGEPAGES
    # far below the 256 pages (512 MiB) the guest used to reserve at boot in every case
    assert 2 * PMD_HUGEPAGES <= 64


def test_the_kernel_command_line_reserves_nothing() -> None:
    from vhostlm.apps.qemu import VmSpec

    spec = VmSpec("g", None, None, Path("v"), Path("q"), Path("c"))
    assert "hugepages" not in spec.append


def test_guest_testpmd_is_sized_to_its_reservation() -> None:
    rx = TestPmdReceiver(probes=True)
    cmd = rx.testpmd_command()
    assert cmd == (
        f"dpdk-testpmd -l 0-1 -n 4 --iova-mode=pa -m {GUEST_TESTPMD_MB} -- -i "
        f"--total-num-mbufs={GUEST_TESTPMD_MBUFS}"
    )
    assert GUEST_TESTPMD_MB is not None and GUEST_TESTPMD_MB <= 2 * PMD_HUGEPAGES
    assert GUEST_TESTPMD_MBUFS is not None and GUEST_TESTPMD_MBUFS > 1024  # testpmd's minimum
    # a distro guest keeps Debian testpmd's own defaults in its larger reservation
    assert DistroTestPmdReceiver(probes=True).testpmd_command() == (
        "dpdk-testpmd -l 0-1 -n 4 --iova-mode=pa -- -i"
    )


def test_the_reservation_is_made_and_checked() -> None:
    shell = ScriptedShell(PMD_HUGEPAGES)
    rx = TestPmdReceiver(probes=True)
    rx.reserve_hugepages(cast(GuestShell, shell))
    assert shell.commands[0] == f"echo {PMD_HUGEPAGES} > /proc/sys/vm/nr_hugepages"
    assert rx.commands == shell.commands[:1]


def test_a_short_reservation_names_the_fix() -> None:
    shell = ScriptedShell(PMD_HUGEPAGES - 3)
    with pytest.raises(SetupError, match=rf"reserved {PMD_HUGEPAGES - 3} of the {PMD_HUGEPAGES}"):
        TestPmdReceiver(probes=True).reserve_hugepages(cast(GuestShell, shell))


def test_guest_mem_needed_per_case() -> None:
    opts = RunOptions(guest_mem_mb=1024, memcheck_mb=0)
    assert guest_mem_needed(VIRTIO_NET, opts)[0] == GUEST_BASE_MB
    pmd, why = guest_mem_needed(VIRTIO_PMD, opts)
    assert pmd == GUEST_BASE_MB + 2 * PMD_HUGEPAGES
    assert f"{2 * PMD_HUGEPAGES} MiB of hugepages for its testpmd" in why
    dirty = replace(VIRTIO_NET, dirty_mb_s=64)
    assert guest_mem_needed(dirty, opts)[0] == GUEST_BASE_MB + 128
    checked = RunOptions(guest_mem_mb=1024, memcheck_mb=100)
    assert guest_mem_needed(VIRTIO_NET, checked)[0] == GUEST_BASE_MB + 100


def test_every_case_fits_the_default_guest_and_512_mib() -> None:
    for mem in (512, 1024):
        check_guest_mem(RunOptions(guest_mem_mb=mem), PLANS["all"])


def test_too_small_a_guest_is_refused_with_the_minimum() -> None:
    need = GUEST_BASE_MB + 2 * PMD_HUGEPAGES
    with pytest.raises(UsageError) as err:
        check_guest_mem(RunOptions(guest_mem_mb=need - 1), [VIRTIO_NET, VIRTIO_PMD])
    text = str(err.value)
    assert text.startswith(f"--guest-mem {need - 1} is too small for virtio_pmd: ")
    assert f"give --guest-mem {need} or more" in text
    assert "\n" not in text
    check_guest_mem(RunOptions(guest_mem_mb=need - 1), [VIRTIO_NET])  # the kernel case fits


def test_the_dirty_load_writes_non_zero_data(tmp_path: Path) -> None:
    mb = 3
    where = str(tmp_path)
    script = f"{dirty_load_fill(mb, where)} && {dirty_load_round(mb, where)}"
    subprocess.run(["sh", "-c", script], check=True, timeout=60)
    data = (tmp_path / "dirty").read_bytes()
    assert len(data) == mb * MIB
    assert data.count(0) == 0  # not one zero byte, so no page of it is a zero page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dirty", "dirty.src"]


def test_a_second_round_rewrites_in_place(tmp_path: Path) -> None:
    where = str(tmp_path)
    subprocess.run(["sh", "-c", dirty_load_fill(2, where)], check=True, timeout=60)
    target = tmp_path / "dirty"
    for _ in range(2):
        subprocess.run(["sh", "-c", dirty_load_round(2, where)], check=True, timeout=60)
        assert target.stat().st_size == 2 * MIB


def test_the_loop_paces_beside_the_round() -> None:
    loop = dirty_load_loop(8, pause="sleep 1")
    assert loop == (f"(while :; do sleep 1 & {dirty_load_round(8)}; wait; done) &")
    assert "/dev/zero" not in dirty_load_round(8)
    assert Driver.PMD.value == "virtio_pmd"
