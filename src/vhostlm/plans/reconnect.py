"""The reconnect plan: a vhost-user backend restarted during a case must reconnect.

In production the switch behind a migrating guest is restarted (an upgrade, a crash, a
config reload), and QEMU is the vhost-user server the switch must connect back to: DPDK
crashed on such a reconnect with multiqueue (3c929a0bb3), QEMU lost one (fixed in 2024).
Both cases pin client mode (QEMU's chardev `server=on`; testpmd `client=1`, OVS's
`dpdkvhostuserclient`): a backend in server mode would need QEMU to reconnect instead. The
restart is measured like an outage, with the probes (`measure.reconnect`).
"""

from __future__ import annotations

from dataclasses import replace

from vhostlm.plans.seed import VIRTIO_NET
from vhostlm.plans.spec import CaseSpec, Restart

RECONNECT_DEST = replace(
    VIRTIO_NET,
    name="reconnect_dest_virtio_net",
    vhost_mode="client",
    restart=Restart.DESTINATION,
    doc="""The destination's backend restarted right after the switch-over must reconnect.

    Steps:
        Client mode (QEMU listens, the backend connects); prerequisites; link up; probes;
        `migrate` to the backup; once the guest answers there and the switch-over's outage
        window has closed, restart the backup's backend (testpmd: quit and start again;
        OVS: ovs-vswitchd stopped and started on the kept database, its flow added again).
    Verify:
        The migration completes; the new backend reports the guest's device ready and the
        guest answers again; the recovery (last reply before the restart to the first
        after) is measured.
    """,
)

RECONNECT_SOURCE = replace(
    VIRTIO_NET,
    name="reconnect_source_virtio_net",
    vhost_mode="client",
    restart=Restart.SOURCE,
    doc="""The source's backend restarted before the migration must reconnect, then migrate.

    Steps:
        Client mode (QEMU listens, the backend connects); prerequisites; link up; probes;
        restart the host's backend; once the guest answers again, `migrate` to the backup.
    Verify:
        The new backend reports the guest's device ready and the guest answers again (the
        recovery is measured); the migration completes and the guest receives on the
        backup.
    """,
)

RECONNECT_CASES: list[CaseSpec] = [RECONNECT_DEST, RECONNECT_SOURCE]
