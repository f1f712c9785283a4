"""Counting guest receptions from console text, for both seed receivers."""

from __future__ import annotations

from vhostlm.apps.guest import KernelReceiver, TestPmdReceiver


def test_testpmd_receiver_sums_source_and_destination() -> None:
    src = "port 0/queue 0: received 2 packets\nport 0/queue 0: received 1 packets\n"
    dst = "garbage\nport 0/queue 0: received 4 packets\n"
    assert TestPmdReceiver().total([src]) == 3
    assert TestPmdReceiver().total([src, dst]) == 7


def test_kernel_receiver_takes_the_last_counter() -> None:
    src = "RX 0\nRX 5\nRX 12\n"
    dst = "RX 12\nRX 20\nvhostlm-guest# "
    assert KernelReceiver().total([src]) == 12
    assert KernelReceiver().total([src, dst]) == 20
    assert KernelReceiver().total(["no counters"]) == 0
