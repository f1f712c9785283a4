"""The vhost-user backend interface: what a case needs of the program behind the guest.

A backend runs on a node with a vhost-user socket and a "physical" port; the case starts
it, tells it to forward, waits until it reports the guest's virtio device ready, reads its
counters and log, and stops it. testpmd is the first implementation; each new backend is
one module beside it, registered in `backends.registry`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from vhostlm.apps.testpmd import PortStats
from vhostlm.nodes.base import Node, NodeProcess
from vhostlm.nodes.stream import ExpectTimeout
from vhostlm.rundir import RunDir
from vhostlm.testbed.topology import Nic


@dataclass(frozen=True)
class BackendConfig:
    """Where and how one backend runs for one case on one role's node."""

    name: str  # the process's name in the run (logs, resources.json)
    node: Node
    rundir: RunDir
    socket: str  # the vhost-user socket, on the node
    nic: Nic  # the role's port to the switch
    hugedir: str
    binary: str
    file_prefix: str  # DPDK's --file-prefix: this backend's own hugepage files
    queues: int = 1
    postcopy: bool = False  # the vhost port must support postcopy migration
    flood: bool = False  # forward(): send into the guest at full speed, forward nothing
    client: bool = False  # the backend connects to QEMU's vhost-user socket (and reconnects)


class VhostBackend(ABC):
    """One vhost-user backend process; a context for nothing: the case's stack stops it."""

    program = ""  # what it is called in a reason: "testpmd"
    # the line of its log that says the guest's virtio device is ready (None: it has none)
    ready_re: re.Pattern[str] | None = None

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    @property
    @abstractmethod
    def process(self) -> NodeProcess:
        """Its process (watched by the case's vitals)."""

    @abstractmethod
    def start(self) -> None:
        """Start it and wait until it accepts commands; SetupError with its words if not."""

    @abstractmethod
    def forward(self) -> None:
        """Start forwarding between the vhost port and the physical port."""

    def mark(self) -> int:
        """A position in its output; pass to `wait_guest_ready` as `since`."""
        return self.process.output.mark()

    @abstractmethod
    def wait_guest_ready(self, timeout: float, since: int = 0) -> str:
        """Wait for the guest's virtio device to be ready; the line that said so."""

    def ready_at(self, since: int = 0, timeout: float = 0.0) -> tuple[float, str] | None:
        """(arrival time, line) of the first whole line after mark `since` that says the
        guest's virtio device is ready, waiting up to `timeout` s for it; None if none came
        (or the backend cannot say). The time is the controller's clock when the line was
        read, as `OutputStream.timed_lines` keeps it."""
        if self.ready_re is None:
            return None
        output = self.process.output
        whole = re.compile(f"(?:{self.ready_re.pattern}).*\\n")  # its line has ended
        try:
            output.expect(whole, timeout, since)
        except ExpectTimeout:
            return None
        return next(
            ((t, ln) for t, ln in output.timed_lines(since) if self.ready_re.search(ln)), None
        )

    @abstractmethod
    def counters(self, port: int = 0) -> PortStats:
        """The counters of one port (0: the vhost port)."""

    def log(self) -> str:
        """Everything it printed so far."""
        return self.process.output.text()

    @abstractmethod
    def stop(self) -> None:
        """Stop it (politely, then by signal); safe to call twice."""
