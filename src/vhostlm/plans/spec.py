"""A case as data: one frozen declaration of everything that makes it differ from another.

The flow (`plans.flow`) reads a `CaseSpec` and nothing else about the case: which ring,
how many queues, which guest driver, backend and guest, which kind of migration, what load
and how many round trips. The plans' catalogs (seed, dts, variants) are lists of specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from vhostlm.backends.base import needs
from vhostlm.guests.base import Driver
from vhostlm.plans.kinds import COMPLETE, MigrationKind


class Ring(StrEnum):
    """The virtqueue layout of the guest's NIC."""

    SPLIT = "split"
    PACKED = "packed"  # `packed=on` on virtio-net-pci


class Restart(StrEnum):
    """Which backend a reconnect case restarts, and when (`plans.reconnect`)."""

    SOURCE = "source"  # the host's, once the guest answers, before the migration starts
    DESTINATION = "destination"  # the destination's, right after the switch-over


DRIVER_STEPS = {Driver.PMD: "guest_testpmd", Driver.NET: "guest_link_up"}


def frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only copy, so a spec's capabilities and parameters cannot change under it."""
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class CaseSpec:
    """One case of a plan; its docstring (`doc`) has the DTS-style Steps: and Verify:."""

    name: str
    doc: str
    driver: Driver
    kind: MigrationKind = COMPLETE
    ring: Ring = Ring.SPLIT
    queues: int = 1
    late_start: bool = False  # the vhost side's `start` only once the guest driver is up
    dirty_mb_s: int = 0  # a memory-dirtying load in the guest, MB/s
    # the backends send into the guest at full speed (testpmd txonly on the vhost port)
    # instead of forwarding the tester's traffic: DPDK writes into the guest's receive
    # buffers all through the migration. No probes can be answered then.
    rx_flood: bool = False
    # at most this much guest RAM for the memory checker (None: the run's --memcheck-mb):
    # for a case whose point needs a short first precopy pass
    memcheck_cap_mb: int | None = None
    round_trips: int = 0  # 0: one migration to the backup; N: N times there and back
    capabilities: Mapping[str, bool] = field(default_factory=frozen)
    parameters: Mapping[str, Any] = field(default_factory=frozen)
    # the vhost-user backend by its registry name; None: the run's --backend. A case pins
    # one only when its point is that backend's (then --backend does not move it).
    backend: str | None = None
    guest: str = "initramfs"
    # the vhost-user mode ("server" | "client"); None: the run's --vhost-mode. A case pins
    # one when its point needs it (a reconnect: the backend connects to QEMU's socket)
    vhost_mode: str | None = None
    restart: Restart | None = None  # a backend restarted during the case (must reconnect)
    # vCPUs, as the seed's `-smp 2`: testpmd in the guest needs a main and a forwarding
    # lcore. (1 vCPU was the default while QEMU 7.2's TCG dirty tracking broke 2-vCPU guests.)
    smp: int = 2

    def memcheck_mb(self, run_mb: int) -> int:
        """The memory checker's region in this case, given the run's."""
        return run_mb if self.memcheck_cap_mb is None else min(run_mb, self.memcheck_cap_mb)

    @property
    def packed(self) -> bool:
        """The packed ring layout."""
        return self.ring is Ring.PACKED

    @property
    def driver_step(self) -> str:
        """The name of the step that starts the guest's driver (the seed's step 7)."""
        return DRIVER_STEPS[self.driver]

    @property
    def reconnects(self) -> bool:
        """The guest driver re-initialises the device after boot (testpmd in the guest)."""
        return self.driver is Driver.PMD

    @property
    def changes_queues(self) -> bool:
        """The guest changes its queue pairs while migrating (`ethtool -L`, as DTS does)."""
        return self.queues > 1 and self.driver is Driver.NET

    @property
    def backend_needs(self) -> frozenset[str]:
        """What any backend of this case must be able to do, before the run's options
        (`--vhost-mode client` adds CLIENT; a case pinned to client mode has it): for
        `vhostlm list` and the flow's skip."""
        return needs(flood=self.rx_flood, postcopy=self.kind.postcopy, queues=self.queues,
                     client=self.vhost_mode == "client")  # fmt: skip

    def description(self) -> str:
        """First line of the docstring, for `vhostlm list`."""
        return self.doc.strip().splitlines()[0]
