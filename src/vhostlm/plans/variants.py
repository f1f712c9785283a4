"""The migrations users actually run, beyond the DTS plan: each a case on virtio-net."""

from __future__ import annotations

from dataclasses import replace

from vhostlm.plans.kinds import Cancel, Multifd, NoConverge, Postcopy
from vhostlm.plans.seed import VIRTIO_NET, VIRTIO_PMD
from vhostlm.plans.spec import CaseSpec, frozen

MIB = 1024 * 1024

PINGPONG = replace(
    VIRTIO_NET,
    name="pingpong_virtio_net",
    round_trips=2,
    doc="""Ping-pong: migrate host -> backup -> host, N round trips (--round-trips N, default 2).

    Steps:
        Prerequisites; link up; probes; migrate to the backup; start a new incoming guest
        on the host; migrate back; repeat.
    Verify:
        Every migration completes and the guest receives after each; each leg is measured.
    """,
)

POSTCOPY = replace(
    VIRTIO_NET,
    name="postcopy_virtio_net",
    kind=Postcopy(),
    doc="""Postcopy: start precopy, then switch to postcopy (QEMU postcopy-ram, vhost postcopy).

    Steps:
        postcopy-ram on both ends, postcopy-support=1 on the vhost ports; `migrate`, then
        `migrate-start-postcopy` while the guest receives.
    Verify:
        The migration reaches postcopy-active and completes; the guest receives after it.
    """,
)

POSTCOPY_PMD = replace(
    VIRTIO_PMD,
    name="postcopy_virtio_pmd",
    kind=Postcopy(),
    doc="""Postcopy with testpmd in the guest (virtio-pmd): its rings and mbufs fault in late.

    Steps:
        As virtio_pmd; postcopy-ram on both ends, postcopy-support=1 on the vhost ports;
        `migrate`, then `migrate-start-postcopy` while the guest's testpmd forwards.
    Verify:
        The migration reaches postcopy-active and completes; the guest's testpmd forwards
        on the backup, where the vhost backend's own reads of guest memory fault pages in.
    """,
)

MULTIFD = replace(
    VIRTIO_NET,
    name="multifd_virtio_net",
    kind=Multifd(),
    doc="""Multifd: RAM sent over several channels (capability multifd, multifd-channels 2).

    Steps:
        multifd on both ends with 2 channels; `migrate`.
    Verify:
        The migration completes and the guest receives on the backup.
    """,
)

PARAMETERS = replace(
    VIRTIO_NET,
    name="params_virtio_net",
    parameters=frozen({"downtime-limit": 50, "max-bandwidth": 100 * MIB}),
    doc="""Downtime limit and bandwidth cap passed through to QEMU and reported.

    Steps:
        migrate-set-parameters downtime-limit 50 ms, max-bandwidth 100 MiB/s (or
        --downtime-limit / --max-bandwidth); `migrate`.
    Verify:
        QEMU reports the parameters back; the migration completes; the guest receives.
    """,
)

CANCEL = replace(
    VIRTIO_NET,
    name="cancel_virtio_net",
    kind=Cancel(),
    doc="""Cancel mid-migration: the guest stays on the host and keeps answering.

    Steps:
        `migrate`; while active and the guest receives, `migrate_cancel`.
    Verify:
        The migration ends cancelled; the source guest runs and keeps receiving probes.
    """,
)

NO_CONVERGE = replace(
    VIRTIO_NET,
    name="noconverge_virtio_net",
    kind=NoConverge(),
    dirty_mb_s=64,
    # bursts of 64 MiB rewritten (non-zero data) once a second: precopy rounds must outlast
    # the second (24 MB/s: 3 s), and the first pass (the load's source and target, 128 MiB,
    # besides the guest's own) must end well within --converge-timeout for the migration to
    # iterate, so the memory checker owns only 16 MiB here. At 12 MB/s it never left the
    # first pass (1 dirty-sync round in 20 s); at 24 MB/s: 3-4 rounds, 3.7 s expected downtime
    parameters=frozen({"max-bandwidth": 24_000_000, "downtime-limit": 10}),
    memcheck_cap_mb=16,
    doc="""A migration that cannot converge: the guest dirties memory faster than the link.

    Steps:
        In the guest rewrite 64 MiB of memory every second; cap the link at 24 MB/s;
        `migrate`.
    Verify:
        After --converge-timeout seconds it is still not done: reported as "did not
        converge within T s" with the figures, cancelled, and the source keeps receiving.
    """,
)

AUTO_CONVERGE = replace(
    VIRTIO_NET,
    name="autoconverge_virtio_net",
    dirty_mb_s=64,
    capabilities=frozen({"auto-converge": True}),
    # noconverge's link: 47-52 s and 16-19 dirty-sync rounds to complete here (16 MB/s, once
    # the load wrote non-zero data: 85 s of the 120 s --migration-timeout)
    parameters=frozen(
        {
            "max-bandwidth": 24_000_000,
            "downtime-limit": 50,
            "cpu-throttle-initial": 50,
            "cpu-throttle-increment": 25,
        }
    ),
    doc="""The same non-converging load with auto-converge on: QEMU throttles the guest and wins.

    Steps:
        64 MiB/s dirtied in the guest; link capped at 24 MB/s; auto-converge with
        cpu-throttle-initial 50, increment 25; `migrate`.
    Verify:
        The migration completes; the guest receives on the backup.
    """,
)

DIRTY_RX = replace(
    AUTO_CONVERGE,
    name="dirty_rx_virtio_net",
    smp=1,
    rx_flood=True,
    doc="""Missed dirty pages: DPDK and the guest both write guest memory all through the migration.

    The load that broke the destination guest under QEMU 7.2's TCG (bench/crash_repro.py
    vhost-rx): what vhostlm's integrity checks must catch, by name, before the guest crashes.
    Steps:
        1 vCPU; the host's and backup's testpmd send into the guest at full speed (txonly on
        the vhost port; no probes); 64 MiB/s dirtied in the guest; the memory checker
        rewrites its region; link capped at 16 MB/s with auto-converge; `migrate`.
    Verify:
        The migration completes; the guest receives on the backup; every page of the
        checker's region is intact and no program printed a sign of lost state.
    """,
)

VARIANT_CASES: list[CaseSpec] = [
    PINGPONG,
    POSTCOPY,
    POSTCOPY_PMD,
    MULTIFD,
    PARAMETERS,
    CANCEL,
    NO_CONVERGE,
    AUTO_CONVERGE,
]
DETECT_CASES: list[CaseSpec] = [DIRTY_RX]
