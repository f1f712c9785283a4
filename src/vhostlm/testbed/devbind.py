"""Binding a server's port to a DPDK driver with dpdk-devbind.py, and giving it back.

The original driver is read from sysfs before binding and recorded in the run's
resources, so the port is restored after the run, also when the run failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from vhostlm.errors import SetupError
from vhostlm.nodes.base import Node

DEVBIND = "dpdk-devbind.py"


@dataclass(frozen=True)
class Binding:
    """A port vhostlm bound: where, which, and the driver to give it back to."""

    node: Node
    pci: str
    driver: str
    original: str | None  # None: the port had no driver


def current_driver(node: Node, pci: str) -> str | None:
    """The kernel driver `pci` is bound to now (None when unbound); SetupError if absent."""
    if not node.exists(f"/sys/bus/pci/devices/{pci}"):
        raise SetupError(f"{node.label}: no PCI device {pci}: check nodes.{node.name}.port.pci")
    done = node.execute(["readlink", f"/sys/bus/pci/devices/{pci}/driver"])
    if done.status != 0:
        return None
    return done.stdout.strip().rsplit("/", 1)[-1] or None


def bind(node: Node, pci: str, driver: str) -> Binding:
    """Bind `pci` to `driver` (loading the module first); return what to restore."""
    original = current_driver(node, pci)
    binding = Binding(node, pci, driver, original)
    if original == driver:
        return binding
    if node.which(DEVBIND) is None:
        raise SetupError(f"{node.label}: {DEVBIND} not found: apt-get install dpdk")
    node.run(["modprobe", driver.replace("-", "_")])
    node.run([DEVBIND, "--force", "-b", driver, pci])
    return binding


def restore(binding: Binding) -> None:
    """Give the port back to its original driver (or unbind it if it had none)."""
    if binding.original == binding.driver:
        return
    node, pci = binding.node, binding.pci
    if binding.original:
        node.run([DEVBIND, "--force", "-b", binding.original, pci])
    else:
        node.run([DEVBIND, "-u", pci])
