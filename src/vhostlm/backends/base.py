"""The vhost-user backend interface: what a case needs of the program behind the guest.

A backend runs on a node with a vhost-user socket and a "physical" port; the case starts
it, tells it to forward, waits until it reports the guest's virtio device ready, reads its
counters and log, and stops it. testpmd is the first implementation; each new backend is
one module beside it, registered in `backends.registry`.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from vhostlm.apps.testpmd import PortStats
from vhostlm.nodes.base import Node, NodeProcess
from vhostlm.nodes.stream import ExpectTimeout
from vhostlm.rundir import RunDir
from vhostlm.testbed.topology import Nic, Tools

# What a case may need of its backend beyond forwarding (a backend's `lacks` names them)
FLOOD = "flood"  # send into the guest at full speed (testpmd txonly), forward nothing
POSTCOPY = "postcopy"  # a vhost port that supports postcopy migration
MULTIQUEUE = "multiqueue"  # more than one queue pair
CLIENT = "client"  # the backend connects to QEMU's vhost-user socket (and reconnects)


def needs(*, flood: bool, postcopy: bool, queues: int, client: bool = False) -> frozenset[str]:
    """The features a backend must have for a case of this shape (one derivation, for the
    flow's BackendConfig and for `vhostlm list`'s case specs alike)."""
    wanted = {FLOOD: flood, POSTCOPY: postcopy, MULTIQUEUE: queues > 1, CLIENT: client}
    return frozenset(name for name, on in wanted.items() if on)


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

    @property
    def needs(self) -> frozenset[str]:
        """What this backend must be able to do (`needs`)."""
        return needs(flood=self.flood, postcopy=self.postcopy, queues=self.queues,
                     client=self.client)  # fmt: skip


@dataclass(frozen=True)
class Restarted:
    """One restart of a backend: its old and new process, and when each moment came (epoch
    seconds, the controller's clock)."""

    old_pid: int
    old_exit: int | None  # how the old process ended (its exit status)
    stopping: float  # the stop was asked
    down: float  # the old process had ended
    up: float  # the new one accepts commands (forwarding asked right after)


class VhostBackend(ABC):
    """One vhost-user backend process; a context for nothing: the case's stack stops it."""

    program = ""  # what it is called in a reason: "testpmd"
    # the line of its log that says the guest's virtio device is ready (None: it has none)
    ready_re: re.Pattern[str] | None = None
    # what it cannot do, feature (FLOOD, ...) -> why: a case needing it is a skip, with this
    lacks: ClassVar[Mapping[str, str]] = {}
    hugepage_mb: ClassVar[int] = 0  # hugepage memory of one instance (the run reserves it)
    package = ""  # the Debian package that has its programs (for a missing one's fix)

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.retired: list[NodeProcess] = []  # its processes before each restart, in order
        self.restarts = 0

    @classmethod
    def unsupported(cls, wanted: Iterable[str]) -> str | None:
        """Why this backend cannot run a case needing `wanted` (the first lacking), or None."""
        return next((cls.lacks[w] for w in sorted(wanted) if w in cls.lacks), None)

    @classmethod
    def programs(cls, tools: Tools) -> dict[str, str]:
        """The programs it runs on a node with `tools`, name -> binary; the first is the
        backend's own (its `binary`): what the run checks for before anything starts."""
        raise NotImplementedError(f"{cls.__name__} names no programs")

    @classmethod
    def binary(cls, tools: Tools) -> str:
        """The backend's own program on a node with `tools` (BackendConfig.binary)."""
        return next(iter(cls.programs(tools).values()))

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
        """Everything it printed so far (every process of it, across restarts)."""
        return "".join(p.output.text() for p in self.processes)

    @property
    def processes(self) -> list[NodeProcess]:
        """Every process it ran, the current one last (more than one once restarted)."""
        return [*self.retired, self.process]

    def restart(self) -> Restarted:
        """Stop its process and start a new one with the same configuration, forwarding
        again: what an admin's restart of the service does. In client mode the new process
        connects to QEMU's socket by itself (QEMU, the server, keeps listening); the caller
        waits for the guest's device to be ready again (`ready_at(0, ...)`: the new process's
        output starts empty)."""
        old = self.process
        stopping = time.time()
        self._halt()
        down = time.time()
        self.retired.append(old)
        self.restarts += 1
        self._respawn()
        up = time.time()
        self.forward()
        return Restarted(old.pid, old.returncode, stopping, down, up)

    def _halt(self) -> None:
        """Stop what a restart stops (`restart`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be restarted")

    def _respawn(self) -> None:
        """Start it again after `_halt`, up to where it accepts commands (`restart`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be restarted")

    @abstractmethod
    def stop(self) -> None:
        """Stop it (politely, then by signal); safe to call twice."""
