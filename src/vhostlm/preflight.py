"""Checks before a run starts anything: each problem is one line saying what to do (exit 2)."""

from __future__ import annotations

import glob
import os
import shutil

from vhostlm.addresses import QEMU_BINARY, TESTPMD_BINARY
from vhostlm.errors import UsageError

BINARIES = {
    QEMU_BINARY: "apt-get install qemu-system-x86",
    TESTPMD_BINARY: "apt-get install dpdk-dev",
    "ip": "apt-get install iproute2",
}
PMDS = {
    "net_vhost": "librte-net-vhost23",
    "net_virtio": "librte-net-virtio23",
    "net_af_packet": "librte-net-af-packet23",
    "mempool_ring": "librte-mempool-ring23",
}
PMD_GLOB = "/usr/lib/*-linux-gnu/dpdk/pmds-*/librte_{name}.so*"


def check_root() -> None:
    """Namespaces, hugepages and raw sockets need root."""
    if os.geteuid() != 0:
        raise UsageError("vhostlm needs root (namespaces, hugepages): run it with sudo")


def check_binaries() -> None:
    """Every program the lab runs is installed."""
    for binary, fix in BINARIES.items():
        if shutil.which(binary) is None:
            raise UsageError(f"{binary} not found: {fix} (or run `make run`)")
    for name, package in PMDS.items():
        if not glob.glob(PMD_GLOB.format(name=name)):
            raise UsageError(f"DPDK PMD {name} not found: apt-get install {package}")


def preflight() -> None:
    """All checks that need no lab."""
    check_root()
    check_binaries()
