"""What every case of a plan shares: the run directory, the lab, the guest image, options.

`RunOptions` is declared in vhostlm.options, beside its command-line flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from vhostlm.guests.disk import DiskSpec
from vhostlm.image.cache import GuestImage
from vhostlm.options import RunOptions as RunOptions  # declared beside its flags
from vhostlm.report.progress import Progress
from vhostlm.rundir import RunDir
from vhostlm.testbed.topology import Topology

# SSE4.2 for Debian's DPDK but no AVX. With QEMU 7.2 and `-cpu max` under TCG the guest's
# testpmd segfaulted after a migration (the pre-9.0 TCG dirty tracking); QEMU 10 passes with
# either, and Nehalem's plainer instructions make the virtio_pmd case about 10% faster.
TCG_CPU = "Nehalem"


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
    disk: DiskSpec | None = None  # the user's guest image (--guest-image), booted instead

    @property
    def cpu(self) -> str:
        """The guest CPU model: the option, else `host` under KVM and TCG_CPU under TCG."""
        return self.options.cpu or ("host" if self.accel == "kvm" else TCG_CPU)
