"""What every case of a plan shares: the run directory, the lab, the guest image, options."""

from __future__ import annotations

from dataclasses import dataclass

from vhostlm.apps.qemu import GUEST_MAC
from vhostlm.image.cache import GuestImage
from vhostlm.report.progress import Progress
from vhostlm.rundir import RunDir
from vhostlm.testbed.topology import Topology

# SSE4.2 for Debian's DPDK but no AVX. With QEMU 7.2 and `-cpu max` under TCG the guest's
# testpmd segfaulted after a migration (the pre-9.0 TCG dirty tracking); QEMU 10 passes with
# either, and Nehalem's plainer instructions make the virtio_pmd case about 10% faster.
TCG_CPU = "Nehalem"


SEED_PPS = 50.0  # the seed's stream: `set verbose 1` prints every packet on the console
PROBE_PPS = 1000.0


@dataclass(frozen=True)
class RunOptions:
    """Knobs of a run that the cases read; defaults follow the seed plan."""

    probes: bool = True
    pps: float | None = None  # None: PROBE_PPS with probes, SEED_PPS without
    dst_mac: str = GUEST_MAC
    guest_mem_mb: int = 1024
    guest_smp: int | None = None  # None: the case's own (smp)
    boot_timeout_s: float = 90.0
    migration_timeout_s: float = 120.0
    after_packets: int = 10
    warmup_s: float = 1.0  # answered probes before migrating, in seconds of traffic
    after_timeout_s: float = 30.0
    backup_backend: bool = True
    switch_learning: bool = False
    cpu: str = ""  # "" = host under KVM, TCG_CPU under TCG
    max_outage_ms: float | None = None
    max_loss: int | None = None
    round_trips: int | None = None  # None: the case's own
    downtime_limit_ms: int | None = None
    max_bandwidth_mbps: float | None = None
    converge_timeout_s: float = 20.0
    guest_memory: str = "hugetlbfs"  # hugetlbfs (as the seed) | memfd
    migration_tls: bool = False  # encrypt the migration stream (QEMU tls-creds-x509)

    @property
    def rate(self) -> float:
        """The tester's packets per second."""
        return self.pps or (PROBE_PPS if self.probes else SEED_PPS)


@dataclass
class LabEnv:
    """The shared set-up the cases run on."""

    rundir: RunDir
    bed: Topology
    image: GuestImage
    accel: str
    options: RunOptions
    progress: Progress
    qemu_version: tuple[int, int] | None = None  # the host's QEMU, (major, minor)

    @property
    def cpu(self) -> str:
        """The guest CPU model: the option, else `host` under KVM and TCG_CPU under TCG."""
        return self.options.cpu or ("host" if self.accel == "kvm" else TCG_CPU)
