"""The reconnect plan: a vhost-user backend restarted during a case must reconnect.

In production the switch behind a migrating guest is restarted (an upgrade, a crash, a
config reload), and the guest's vhost-user connection must come back by itself: DPDK
crashed on such a reconnect with multiqueue (3c929a0bb3), QEMU lost one (fixed in 2024).
Who reconnects depends on the vhost-user mode, so each restart runs in both:

- client mode (`reconnect_dest_virtio_net`, `reconnect_source_virtio_net`): QEMU's chardev
  is `server=on` and keeps listening; the new backend (testpmd `client=1`, OVS
  `dpdkvhostuserclient`) connects to it as it starts.
- server mode (`reconnect_*_server_virtio_net`): the backend listens (testpmd without
  `client=1`, OVS `dpdkvhostuser`) and makes its socket anew when it starts again; QEMU is
  the client and connects again by itself: its chardev has `reconnect-ms=100`
  (`plans.restart.QEMU_RECONNECT_MS`; `reconnect=1`, whole seconds, before QEMU 9.2).

The restart is measured like an outage, with the probes, the same way in both modes
(`measure.reconnect`), so their recoveries compare. In server mode two waits add to it,
both inside the `until_ready_ms` segment: QEMU's reconnect delay (it tries every 100 ms, so
the try that succeeds comes 0 to 100 ms after the new backend's socket exists), and DPDK's
vhost event thread taking up the new listening socket only when its poll times out, up to
1 s later (`plans.restart.QEMU_RECONNECT_MS`): 1.6 s of recovery against 0.5-1.0 s here.
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

RECONNECT_DEST_SERVER = replace(
    RECONNECT_DEST,
    name="reconnect_dest_server_virtio_net",
    vhost_mode="server",
    doc="""The destination's server-mode backend restarted after the switch-over: QEMU reconnects.

    Steps:
        Server mode (the backend listens; QEMU connects, its chardev with `reconnect-ms`);
        prerequisites; link up; probes; `migrate` to the backup; once the guest answers
        there and the switch-over's outage window has closed, restart the backup's backend
        (testpmd: quit and start again; OVS: ovs-vswitchd stopped and started on the kept
        database, its `dpdkvhostuser` socket made anew, its flow added again).
    Verify:
        The migration completes; the backup's QEMU connects to the new backend by itself,
        which reports the guest's device ready, and the guest answers again; the recovery
        is measured as in `reconnect_dest_virtio_net` (QEMU's reconnect delay in it).
    """,
)

RECONNECT_SOURCE_SERVER = replace(
    RECONNECT_SOURCE,
    name="reconnect_source_server_virtio_net",
    vhost_mode="server",
    doc="""The source's server-mode backend restarted before the migration: QEMU reconnects.

    Steps:
        Server mode (the backend listens; QEMU connects, its chardev with `reconnect-ms`);
        prerequisites; link up; probes; restart the host's backend; once the guest answers
        again, `migrate` to the backup.
    Verify:
        The host's QEMU connects to the new backend by itself, which reports the guest's
        device ready, and the guest answers again (the recovery is measured as in
        `reconnect_source_virtio_net`); the migration completes and the guest receives on
        the backup.
    """,
)

RECONNECT_CASES: list[CaseSpec] = [
    RECONNECT_DEST,
    RECONNECT_SOURCE,
    RECONNECT_DEST_SERVER,
    RECONNECT_SOURCE_SERVER,
]
