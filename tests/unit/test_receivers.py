"""Reading the guest's receive counters from console text."""

from __future__ import annotations

from pathlib import Path

import pytest

from vhostlm.apps.console import Console, GuestShell
from vhostlm.apps.guest import KernelReceiver, guest_crash
from vhostlm.errors import SetupError


def shell_with(text: str, tmp_path: Path) -> GuestShell:
    console = Console("console-test", tmp_path / "none.sock", tmp_path / "console.log")
    console.output.feed(text)
    return GuestShell(console)


def test_kernel_receiver_reads_the_last_counter(tmp_path: Path) -> None:
    shell = shell_with("RX 0\nRX 5\nRX 12\n", tmp_path)
    rx = KernelReceiver(probes=True)
    assert rx.count(shell, 0.1) == 12
    assert rx.wait_count(shell, 12, 0.1) == 12
    assert rx.wait_count(shell, 13, 0.1) is None


def test_kernel_receiver_without_counter_lines_fails(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="no rx counter"):
        KernelReceiver(probes=False).count(shell_with("booting\n", tmp_path), 0.1)


def test_a_line_still_arriving_is_not_read(tmp_path: Path) -> None:
    shell = shell_with("RX 40\nRX 4", tmp_path)  # "RX 412" is on its way
    assert KernelReceiver(probes=True).count(shell, 0.1) == 40


def test_a_crashed_guest_is_named_in_the_error(tmp_path: Path) -> None:
    text = (
        "[   18.808164] invalid opcode: 0000 [#1] PREEMPT SMP PTI\n"
        "[   18.811882] CPU: 0 PID: 0 Comm: swapper/0\n"
        "[   19.034553] Kernel panic - not syncing: Attempted to kill the idle task!\n"
    )
    with pytest.raises(SetupError, match=r"kernel crashed: \[   18\.808164\] invalid opcode"):
        KernelReceiver(probes=True).count(shell_with(text, tmp_path), 0.1)
    assert guest_crash("RX 1\nRX 2\n") is None
    assert guest_crash("x\n[ 1.0] BUG: kernel NULL pointer dereference, address: 0\n") == (
        "[ 1.0] BUG: kernel NULL pointer dereference, address: 0"
    )
