"""The seed plan: DPDK's "vhost user live migration" test plan, its two cases."""

from __future__ import annotations

from vhostlm.guests.base import Driver
from vhostlm.plans.spec import CaseSpec

VIRTIO_PMD = CaseSpec(
    name="virtio_pmd",
    driver=Driver.PMD,
    doc="""Migrate a guest whose virtio device is driven by testpmd (virtio-pmd) in the guest.

    Steps:
        Prerequisites 2-5; in the guest bind the device to uio_pci_generic, run testpmd,
        `set fwd rxonly`, `set verbose 1`, `start tx_first`; tester sends continuously;
        `migrate` to the backup over the migration link.
    Verify:
        The host's vhost PMD reports the device ready; the guest receives before, while the
        migration is active and, on the backup, after it completed.
    """,
)

VIRTIO_NET = CaseSpec(
    name="virtio_net",
    driver=Driver.NET,
    doc="""Migrate a guest whose virtio device is driven by the guest kernel's virtio-net.

    Steps:
        Prerequisites 2-5; in the guest bring the link up; tester sends continuously;
        `migrate` to the backup over the migration link.
    Verify:
        The guest interface's receive counter rises before, while the migration is
        active and, on the backup, after it completed.
    """,
)

SEED_CASES: list[CaseSpec] = [VIRTIO_PMD, VIRTIO_NET]
