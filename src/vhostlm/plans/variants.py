"""The migrations users actually run, beyond the DTS plan: each a case on virtio-net."""

from __future__ import annotations

from typing import Any, ClassVar

from vhostlm.plans.migration import MigrationCase
from vhostlm.plans.seed import VirtioNet

MIB = 1024 * 1024


class PingPong(VirtioNet):
    """Ping-pong: migrate host -> backup -> host, N round trips (--round-trips N, default 2).

    Steps:
        Prerequisites; link up; probes; migrate to the backup; start a new incoming guest
        on the host; migrate back; repeat.
    Verify:
        Every migration completes and the guest receives after each; each leg is measured.
    """

    name = "pingpong_virtio_net"
    round_trips = 2


class Postcopy(VirtioNet):
    """Postcopy: start precopy, then switch to postcopy (QEMU postcopy-ram, vhost postcopy).

    Steps:
        postcopy-ram on both ends, postcopy-support=1 on the vhost ports; `migrate`, then
        `migrate-start-postcopy` while the guest receives.
    Verify:
        The migration reaches postcopy-active and completes; the guest receives after it.
    """

    name = "postcopy_virtio_net"
    postcopy = True


class Multifd(VirtioNet):
    """Multifd: RAM sent over several channels (capability multifd, multifd-channels 2).

    Steps:
        multifd on both ends with 2 channels; `migrate`.
    Verify:
        The migration completes and the guest receives on the backup.
    """

    name = "multifd_virtio_net"
    capabilities: ClassVar[dict[str, bool]] = {"multifd": True}
    parameters: ClassVar[dict[str, Any]] = {"multifd-channels": 2}


class Parameters(VirtioNet):
    """Downtime limit and bandwidth cap passed through to QEMU and reported.

    Steps:
        migrate-set-parameters downtime-limit 50 ms, max-bandwidth 100 MiB/s (or
        --downtime-limit / --max-bandwidth); `migrate`.
    Verify:
        QEMU reports the parameters back; the migration completes; the guest receives.
    """

    name = "params_virtio_net"
    parameters: ClassVar[dict[str, Any]] = {"downtime-limit": 50, "max-bandwidth": 100 * MIB}


class Cancel(VirtioNet):
    """Cancel mid-migration: the guest stays on the host and keeps answering.

    Steps:
        `migrate`; while active and the guest receives, `migrate_cancel`.
    Verify:
        The migration ends cancelled; the source guest runs and keeps receiving probes.
    """

    name = "cancel_virtio_net"
    variant = "cancel"


class NoConverge(VirtioNet):
    """A migration that cannot converge: the guest dirties memory faster than the link.

    Steps:
        In the guest rewrite 64 MiB of memory every second; cap the link at 8 MB/s;
        `migrate`.
    Verify:
        After --converge-timeout seconds it is still not done: reported as "did not
        converge within T s" with the figures, cancelled, and the source keeps receiving.
    """

    name = "noconverge_virtio_net"
    variant = "no_converge"
    dirty_mb_s = 64
    parameters: ClassVar[dict[str, Any]] = {"max-bandwidth": 8_000_000, "downtime-limit": 10}


class AutoConverge(VirtioNet):
    """The same non-converging load with auto-converge on: QEMU throttles the guest and wins.

    Steps:
        64 MiB/s dirtied in the guest; link capped at 16 MB/s; auto-converge with
        cpu-throttle-initial 50, increment 25; `migrate`.
    Verify:
        The migration completes; the guest receives on the backup.
    """

    name = "autoconverge_virtio_net"
    dirty_mb_s = 64
    capabilities: ClassVar[dict[str, bool]] = {"auto-converge": True}
    parameters: ClassVar[dict[str, Any]] = {
        "max-bandwidth": 16_000_000,
        "downtime-limit": 50,
        "cpu-throttle-initial": 50,
        "cpu-throttle-increment": 25,
    }


VARIANT_CASES: list[type[MigrationCase]] = [
    PingPong,
    Postcopy,
    Multifd,
    Parameters,
    Cancel,
    NoConverge,
    AutoConverge,
]
