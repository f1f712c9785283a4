"""DPDK's current plan for the feature (DTS vhost_user_live_migration): eight cases.

Split and packed ring (`packed=on` on virtio-net-pci), each with: virtio-pmd with the
vhost testpmd started before the guest; virtio-pmd with the vhost side's `start` only once
the guest's testpmd is up; the kernel's virtio-net; virtio-net with 4 queue pairs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vhostlm.plans.seed import VIRTIO_NET, VIRTIO_PMD
from vhostlm.plans.spec import CaseSpec, Ring

SHAPES: dict[str, tuple[CaseSpec, dict[str, Any], str, str]] = {
    "virtio_pmd": (
        VIRTIO_PMD,
        {},
        "testpmd in the guest on the virtio PMD; the vhost testpmd forwards before the guest boots",
        "`start` on the host's vhost testpmd, boot, guest testpmd",
    ),
    "virtio_pmd_vhost_late": (
        VIRTIO_PMD,
        {"late_start": True},
        "testpmd in the guest; the vhost side's `start` only once the guest's testpmd is up",
        "boot, guest testpmd, then `start` on the host's vhost testpmd",
    ),
    "virtio_net": (
        VIRTIO_NET,
        {},
        "the guest kernel's virtio-net driver",
        "boot, link up in the guest",
    ),
    "virtio_net_mq4": (
        VIRTIO_NET,
        {"queues": 4},
        "the guest kernel's virtio-net with 4 queue pairs; `ethtool -L` while migrating",
        "queues=4 on netdev and vhost port, mq=on, --rxq/--txq 4; boot, link up; "
        "`ethtool -L <if> combined 4` in the guest while the migration is active",
    ),
}


def _case(ring: Ring, shape: str) -> CaseSpec:
    base, attrs, what, steps = SHAPES[shape]
    packed = ring is Ring.PACKED
    doc = (
        f"{ring.value.capitalize()} ring: migrate a guest with {what}.\n\n"
        f"    Steps:\n        Prerequisites; {'packed=on on the device; ' if packed else ''}"
        f"{steps}; tester probes; `migrate` to the backup.\n"
        "    Verify:\n        The vhost PMD reports the device ready; the guest receives before, "
        "while the migration is active and on the backup after it; "
        "the migration completes.\n"
    )
    return replace(base, name=f"{ring.value}_{shape}", doc=doc, ring=ring, **attrs)


DTS_CASES: list[CaseSpec] = [_case(ring, shape) for ring in Ring for shape in SHAPES]
