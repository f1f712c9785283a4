"""Port binding: the original driver is read, the port bound, then given back exactly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from vhostlm.errors import SetupError
from vhostlm.nodes.base import Completed, Node, NodeProcess
from vhostlm.rundir import RunDir
from vhostlm.testbed import devbind

PCI = "0000:3b:00.0"


class FakeNode(Node):
    """Records commands; answers sysfs reads from a table of PCI device -> driver."""

    def __init__(self, drivers: dict[str, str | None]) -> None:
        super().__init__("host")
        self.drivers = drivers
        self.commands: list[list[str]] = []

    @property
    def label(self) -> str:
        return "host (fake)"

    def execute(self, argv: Sequence[str], timeout: float = 30.0) -> Completed:
        argv = list(argv)
        self.commands.append(argv)
        if argv[:2] == ["test", "-e"]:
            pci = argv[2].rsplit("/", 1)[-1]
            return Completed(0 if pci in self.drivers else 1, "", "")
        if argv[0] == "readlink":
            driver = self.drivers.get(argv[1].split("/")[-2])
            return (
                Completed(0, f"../../../bus/pci/drivers/{driver}\n", "")
                if driver
                else Completed(1, "", "")
            )
        if (
            argv[0] == devbind.DEVBIND
            and argv[-2] == "-b"
            or argv[:1] == [devbind.DEVBIND]
            and "-b" in argv
        ):
            self.drivers[argv[-1]] = argv[-2]
        if argv[:1] == [devbind.DEVBIND] and "-u" in argv:
            self.drivers[argv[-1]] = None
        if argv[:3] == ["sh", "-c", 'command -v "$1"']:
            return Completed(0, f"/usr/bin/{argv[-1]}\n", "")
        return Completed(0, "", "")

    def process(self, name: str, argv: Sequence[str], rundir: RunDir,
                env: dict[str, str] | None = None) -> NodeProcess:  # fmt: skip
        raise NotImplementedError

    def put(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def reach(self, remote_socket: str) -> Path:
        raise NotImplementedError


def devbind_calls(node: FakeNode) -> list[list[str]]:
    return [c for c in node.commands if c[0] in (devbind.DEVBIND, "modprobe")]


def test_bind_then_restore_the_original_driver() -> None:
    node = FakeNode({PCI: "ixgbe"})
    binding = devbind.bind(node, PCI, "vfio-pci")
    assert binding.original == "ixgbe"
    assert devbind_calls(node) == [
        ["modprobe", "vfio_pci"],
        [devbind.DEVBIND, "--force", "-b", "vfio-pci", PCI],
    ]
    assert node.drivers[PCI] == "vfio-pci"
    devbind.restore(binding)
    assert devbind_calls(node)[-1] == [devbind.DEVBIND, "--force", "-b", "ixgbe", PCI]
    assert node.drivers[PCI] == "ixgbe"


def test_port_without_driver_is_unbound_again() -> None:
    node = FakeNode({PCI: None})
    binding = devbind.bind(node, PCI, "uio_pci_generic")
    assert binding.original is None
    devbind.restore(binding)
    assert devbind_calls(node)[-1] == [devbind.DEVBIND, "-u", PCI]
    assert node.drivers[PCI] is None


def test_already_bound_port_is_left_alone() -> None:
    node = FakeNode({PCI: "vfio-pci"})
    devbind.restore(devbind.bind(node, PCI, "vfio-pci"))
    assert devbind_calls(node) == []


def test_absent_device_names_the_field() -> None:
    with pytest.raises(SetupError, match=r"no PCI device 0000:3b:00.0: check nodes.host.port.pci"):
        devbind.bind(FakeNode({}), PCI, "vfio-pci")
