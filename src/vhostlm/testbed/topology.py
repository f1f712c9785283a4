"""What a plan needs from a testbed, whether the embedded lab or three servers over SSH.

The cases ask a `Topology` for the node playing a role, its port, its hugepage mount,
where its run files go and how the migration reaches the backup; they never look at how
the testbed was built.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from vhostlm.addresses import MIG_PORT, QEMU_BINARY, TESTPMD_BINARY
from vhostlm.nodes.base import Node
from vhostlm.nodes.clock import Clocks
from vhostlm.nodes.sockets import secure_sockets

ROLES = ("host", "backup", "tester")


@dataclass(frozen=True)
class Nic:
    """A role's port to the switch: a kernel interface (af_packet) or a PCI device."""

    interface: str | None = None
    pci: str | None = None
    driver: str | None = None  # for a PCI device: vfio-pci, igb_uio, uio_pci_generic

    def testpmd_ports(self, queues: int) -> tuple[list[str], list[str]]:
        """(vdevs, EAL arguments) that give testpmd this port."""
        if self.pci:
            return [], ["-a", self.pci]
        return [f"net_af_packet0,iface={self.interface},qpairs={queues}"], []


@dataclass(frozen=True)
class Tools:
    """Where a node's programs are."""

    qemu: str = QEMU_BINARY
    testpmd: str = TESTPMD_BINARY
    python: str = sys.executable


class Topology(ABC):
    """Roles, their nodes and resources for one run."""

    migration_port = MIG_PORT

    @abstractmethod
    def node(self, role: str) -> Node:
        """The node playing `role` (host, backup, tester)."""

    @abstractmethod
    def nic(self, role: str) -> Nic:
        """The role's port to the switch."""

    @abstractmethod
    def hugedir(self, role: str) -> str:
        """The hugetlbfs mount guests and testpmd use on the role's node."""

    @abstractmethod
    def migration_ip(self, role: str) -> str:
        """The role's address on the migration network."""

    @abstractmethod
    def workdir(self, role: str) -> str:
        """This run's private directory on the role's node (sockets, copied files)."""

    @abstractmethod
    def guest_files(self, role: str) -> tuple[str, str]:
        """(kernel, initrd) of the guest on the role's node."""

    @abstractmethod
    def sniff_points(self) -> dict[str, tuple[Node, str]]:
        """Where announcements of the guest are seen: destination role -> (node, iface)."""

    def guest_disk(self) -> str | None:
        """A disk image host and backup share, attached to the guest; None for none."""
        return None

    def overlay_dir(self, image: str) -> str | None:
        """Where a case's overlay of the guest image `image` goes, on storage host and
        backup share; None: the run's own directory (the lab's nodes share this machine)."""
        return None

    @property
    def clocks(self) -> Clocks:
        """Every role's clock against the controller's (made on first use; read by the
        runner before the run and after it, and after each case by its traffic)."""
        made: Clocks | None = self.__dict__.get("_clocks")
        if made is None:
            made = Clocks({r: (self.node(r), self.tools(r).python) for r in ROLES})
            self.__dict__["_clocks"] = made
        return made

    def tools(self, role: str) -> Tools:
        """Where the role's programs are (defaults: found on PATH)."""
        return Tools()

    def claim_socket(self, role: str, path: str) -> None:  # noqa: B027 - most have nothing to do
        """Make sure nothing listens on the socket `path` a backend is about to create.

        A testbed's run directory is new on every node, so nothing can; the lab overrides."""

    def secure_sockets(self, role: str, local: Path) -> None:
        """Sockets 0600: on the role's node, and the local forwards of them in `local`."""
        self.node(role).secure_sockets(self.workdir(role))
        secure_sockets(local)

    def stage_dir(self, role: str, local: Path) -> str:
        """Copy the files of directory `local` to a private directory on the role's node;
        its path there. (The lab's nodes see this machine's files: it returns `local`.)"""
        node = self.node(role)
        remote = f"{self.workdir(role)}/{local.parent.name}-{local.name}"
        node.run(["mkdir", "-p", "-m", "0700", remote])
        for path in sorted(local.iterdir()):
            node.put(path, f"{remote}/{path.name}")
        node.run(["chmod", "-R", "go-rwx", remote])
        return remote

    def socket_path(self, role: str, name: str) -> str:
        """A unix socket path in the run's directory on the role's node."""
        return f"{self.workdir(role)}/{name}"
