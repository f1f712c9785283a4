"""How the runner brings up each kind of testbed: the embedded lab or servers over SSH.

A `BedSetup` answers every question the runner used to branch on: what to check before
anything starts, how to build the `Topology`, which QEMU and host facts to record, how to
choose the accelerator, and how to take it all down. Plans see only the Topology.
"""

from __future__ import annotations

import platform
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhostlm.addresses import QEMU_BINARY
from vhostlm.apps.accel import boots_under_kvm, probe_accel
from vhostlm.image.cache import GuestImage
from vhostlm.preflight import preflight
from vhostlm.rundir import RunDir
from vhostlm.testbed import hugepages
from vhostlm.testbed.lab import Lab
from vhostlm.testbed.model import TestbedSpec, load_testbed
from vhostlm.testbed.remote import RemoteBed
from vhostlm.testbed.topology import Topology


@dataclass(frozen=True)
class Budget:
    """Hugepage memory of one guest and one vhost backend, MiB."""

    guest_mb: int
    backend_mb: int

    def lab_pages(self) -> int:
        """2 MiB pages for the lab: two guests (source and destination), two backends."""
        return 2 * (self.guest_mb // 2) + 2 * (self.backend_mb // 2) + 32

    def node_mb(self) -> int:
        """Hugepage memory one testbed server needs: a guest and a backend at a time."""
        return self.guest_mb + self.backend_mb + 64


def local_qemu_version(binary: str = QEMU_BINARY) -> str:
    """`qemu-system-x86_64 --version`, first line's version number."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    words = out.split()
    return words[3] if len(words) > 3 else out.strip()


class BedSetup(ABC):
    """One kind of testbed, from the checks before a run to its teardown."""

    label = ""  # results.json's `testbed`
    phase = ""  # the set-up phase's name in the progress lines

    @abstractmethod
    def check(self, budget: Budget) -> None:
        """Usage errors before anything starts (one line, exit code 2)."""

    @abstractmethod
    def reach(self, rundir: RunDir) -> None:
        """Connect to what the run needs before set-up; undoes itself on failure."""

    @abstractmethod
    def up(self, rundir: RunDir, image: GuestImage, budget: Budget, learning: bool) -> Topology:
        """Build the testbed for the run."""

    @abstractmethod
    def facts(self) -> tuple[str, dict[str, Any]]:
        """(the host's QEMU version line, facts of the host) once it is up."""

    @abstractmethod
    def accel(self, image: GuestImage, rundir: RunDir, cache: Path) -> str:
        """kvm or tcg: what the guests will run under."""

    def guest_image(self) -> tuple[str, str, Path | None] | None:
        """(image path, login, password file) of the testbed's own guest image; None."""
        return None

    @abstractmethod
    def down(self) -> list[str]:
        """Take down what `up` built; the problems met, in words."""


class LabSetup(BedSetup):
    """The embedded lab: network namespaces on this machine."""

    label = "lab"
    phase = "lab"

    def __init__(self, qemu: str = QEMU_BINARY) -> None:
        self.qemu = qemu
        self.lab: Lab | None = None

    def check(self, budget: Budget) -> None:
        """Root, programs, and hugepages that can possibly be had."""
        preflight()
        hugepages.check_available(budget.lab_pages())

    def reach(self, rundir: RunDir) -> None:
        """Nothing to reach: the lab is local."""

    def up(self, rundir: RunDir, image: GuestImage, budget: Budget, learning: bool) -> Topology:
        """Namespaces, links, the hugetlbfs mount; the cached image used in place."""
        self.lab = Lab(rundir, qemu=self.qemu).up(budget.lab_pages(), learning=learning)
        self.lab.image = (str(image.kernel), str(image.initrd))
        return self.lab

    def facts(self) -> tuple[str, dict[str, Any]]:
        """This machine's QEMU; the host facts are this machine's (recorded already)."""
        return local_qemu_version(self.qemu), {"qemu_binary": self.qemu}

    def accel(self, image: GuestImage, rundir: RunDir, cache: Path) -> str:
        """KVM when a guest really boots under it here (cached), else TCG."""
        return probe_accel(image, rundir, cache, binary=self.qemu)

    def down(self) -> list[str]:
        """The lab goes with the run's runtime directory (teardown_runtime)."""
        return []


class SshSetup(BedSetup):
    """Three servers from a testbed file, reached over SSH."""

    phase = "testbed"

    def __init__(self, spec: TestbedSpec, source: Path) -> None:
        self.spec = spec
        self.source = source
        self.label = f"ssh:{source}"
        self.remote: RemoteBed | None = None

    def check(self, budget: Budget) -> None:
        """The testbed file was read and checked already (load_testbed)."""

    def reach(self, rundir: RunDir) -> None:
        """Connect to every node and check its programs."""
        self.remote = RemoteBed(self.spec, str(self.source), rundir).reach()

    def up(self, rundir: RunDir, image: GuestImage, budget: Budget, learning: bool) -> Topology:
        """Hugepages checked, ports bound, the guest copied to each node."""
        assert self.remote is not None, "reach() first"
        return self.remote.up(image, budget.node_mb())

    def facts(self) -> tuple[str, dict[str, Any]]:
        """The host node's QEMU, kernel and machine, and what the testbed found."""
        remote = self.remote
        assert remote is not None
        host = remote.node("host")
        qemu = host.run([remote.tools("host").qemu, "--version"]).split("\n")[0]
        facts = dict(remote.facts)
        facts["kernel"] = host.run(["uname", "-r"]).strip()
        facts["machine"] = host.run(["uname", "-m"]).strip()
        return qemu, facts

    def accel(self, image: GuestImage, rundir: RunDir, cache: Path) -> str:
        """The testbed file's accel, or `auto`: KVM when the guest really boots under it."""
        remote = self.remote
        assert remote is not None
        wanted = self.spec.guest.accel
        if wanted != "auto":
            return wanted
        kernel, initrd = remote.guest_files("host")
        qemu = remote.tools("host").qemu
        return (
            "kvm" if boots_under_kvm(remote.node("host"), kernel, initrd, rundir, qemu) else "tcg"
        )

    def guest_image(self) -> tuple[str, str, Path | None] | None:
        """(image path on the nodes, login, password file here) of guest.image, or None."""
        g = self.spec.guest
        if g.image is None:
            return None
        return g.image, g.user, Path(g.password_file) if g.password_file else None

    def down(self) -> list[str]:
        """Unbind ports, remove the run's directories on every node."""
        return self.remote.down() if self.remote is not None else []


def bed_setup(
    testbed: Path | None, qemu: str | None = None, guest_image: Path | None = None
) -> BedSetup:
    """The lab when no testbed file is given, else the file's servers (read and checked);
    `qemu` (--qemu): the QEMU binary host and backup run instead of their default;
    `guest_image` (--guest-image): the testbed's guest.image instead of its own."""
    if testbed is None:
        return LabSetup(qemu or QEMU_BINARY)
    spec = load_testbed(testbed)
    if guest_image is not None:
        guest = spec.guest.model_copy(update={"image": str(guest_image.resolve())})
        spec = spec.model_copy(update={"guest": guest})
    if qemu is not None:
        nodes = spec.nodes.model_copy(
            update={
                role: getattr(spec.nodes, role).model_copy(update={"qemu": qemu})
                for role in ("host", "backup")
            }
        )
        spec = spec.model_copy(update={"nodes": nodes})
    return SshSetup(spec, testbed)


def this_machine() -> dict[str, str]:
    """Facts of the machine vhostlm runs on."""
    return {"kernel": platform.release(), "machine": platform.machine()}
