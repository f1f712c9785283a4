"""The seed plan: DPDK's "vhost user live migration" test plan, its two cases."""

from __future__ import annotations

from vhostlm.apps.guest import KernelReceiver, Receiver, TestPmdReceiver
from vhostlm.plans.migration import MigrationCase


class VirtioPmd(MigrationCase):
    """Migrate a guest whose virtio device is driven by testpmd (virtio-pmd) in the guest.

    Steps:
        Prerequisites 2-5; in the guest bind the device to uio_pci_generic, run testpmd,
        `set fwd rxonly`, `set verbose 1`, `start tx_first`; tester sends continuously;
        `migrate` to the backup over the migration link.
    Verify:
        The host's vhost PMD reports the device ready; the guest receives before, while the
        migration is active and, on the backup, after it completed.
    """

    name = "virtio_pmd"
    driver_step = "guest_testpmd"
    reconnects = True

    def receiver(self, probes: bool) -> Receiver:
        """testpmd in the guest."""
        return TestPmdReceiver(probes)


class VirtioNet(MigrationCase):
    """Migrate a guest whose virtio device is driven by the guest kernel's virtio-net.

    Steps:
        Prerequisites 2-5; in the guest bring the link up; tester sends continuously;
        `migrate` to the backup over the migration link.
    Verify:
        The guest interface's receive counter rises before, while the migration is
        active and, on the backup, after it completed.
    """

    name = "virtio_net"
    driver_step = "guest_link_up"

    def receiver(self, probes: bool) -> Receiver:
        """The kernel driver, its rx counter printed in a loop."""
        return KernelReceiver(probes, queues=self.queues)


SEED_CASES: list[type[MigrationCase]] = [VirtioPmd, VirtioNet]
