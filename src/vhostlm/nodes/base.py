"""The one interface every layer uses to act on a machine of the testbed.

Cases, apps and the testbed set-up never care whether a node is a namespace on this
machine or a server over SSH: they run commands, start owned interactive programs, copy
files and reach the node's unix sockets through a `Node`.
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vhostlm.errors import SetupError
from vhostlm.nodes.stream import OutputStream
from vhostlm.rundir import RunDir
from vhostlm.wait import wait_until


@dataclass(frozen=True)
class Completed:
    """The end of a short command: exit status and what it printed."""

    status: int
    stdout: str
    stderr: str


class NodeProcess(Protocol):
    """A long-running program owned by the run: interactive, drained to a log, stoppable."""

    name: str
    rundir: RunDir
    output: OutputStream

    @property
    def pid(self) -> int:
        """Its process id on its node."""
        ...

    @property
    def returncode(self) -> int | None:
        """Exit status once ended."""
        ...

    def start(self) -> NodeProcess:
        """Start it; SetupError when it cannot be started."""
        ...

    def alive(self) -> bool:
        """True while it runs."""
        ...

    def send(self, line: str) -> None:
        """Type one line into its terminal."""
        ...

    def expect(self, pattern: str, timeout: float, since: int = 0) -> str:
        """Wait for `pattern` in its output; return the matched text."""
        ...

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """End it: `sig`, then SIGKILL after `timeout` s."""
        ...

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for it to end by itself."""
        ...


class Node(ABC):
    """One machine of the testbed in a role (host, backup, tester, switch)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    @abstractmethod
    def label(self) -> str:
        """The node for messages: its role and where it is."""

    @abstractmethod
    def execute(self, argv: Sequence[str], timeout: float = 30.0) -> Completed:
        """Run a short command to its end; never raises for a non-zero status."""

    @abstractmethod
    def process(
        self, name: str, argv: Sequence[str], rundir: RunDir, env: dict[str, str] | None = None
    ) -> NodeProcess:
        """An owned interactive program (not started yet) named `name` in the logs."""

    @abstractmethod
    def put(self, local: Path, remote: str) -> None:
        """Copy a local file to `remote` on the node."""

    @abstractmethod
    def get(self, remote: str, local: Path) -> None:
        """Copy file `remote` from the node to `local`."""

    @abstractmethod
    def reach(self, remote_socket: str) -> Path:
        """A local unix socket path that connects to the node's `remote_socket`."""

    def close(self) -> None:  # noqa: B027 - nothing to close for most nodes
        """Release the connection to the node, if any."""

    def clock_samples(self, python: str, count: int) -> list[tuple[float, float, float]] | None:
        """`count` exchanges (asked, node's clock, answered) with the node's clock, or None
        for a node that reads this machine's clock (a local namespace shares it)."""
        return None

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> str:
        """Run `argv` and return its stdout; SetupError naming the node when it fails."""
        done = self.execute(argv, timeout)
        if check and done.status != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            why = lines[-1] if lines else f"exit status {done.status}"
            raise SetupError(f"{self.label}: {' '.join(argv)} failed: {why}")
        return done.stdout

    def exists(self, path: str) -> bool:
        """True when `path` exists on the node."""
        return self.execute(["test", "-e", path]).status == 0

    def which(self, binary: str) -> str | None:
        """Full path of `binary` on the node (as the shell finds it), or None."""
        if "/" in binary:
            return binary if self.execute(["test", "-x", binary]).status == 0 else None
        done = self.execute(["sh", "-c", 'command -v "$1"', "which", binary])
        return done.stdout.strip() or None

    def wait_socket(
        self, path: str, timeout: float, alive: Callable[[], bool] | None = None
    ) -> None:
        """Wait until unix socket `path` exists on the node (a program created it); WaitTimeout
        naming it, or SetupError as soon as `alive()` says the program that makes it ended."""

        def present() -> bool:
            if self._is_socket(path):
                return True
            if alive is not None and not alive():
                raise SetupError(f"{self.label}: the program that makes {path} ended")
            return False

        wait_until(present, timeout, what=f"{self.label}: socket {path}")

    def _is_socket(self, path: str) -> bool:
        return self.execute(["test", "-S", path]).status == 0

    def secure_sockets(self, directory: str) -> None:
        """Make every unix socket in `directory` on the node mode 0600 (QEMU and testpmd
        create them with their umask)."""
        self.run(["find", directory, "-maxdepth", "1", "-type", "s", "!", "-perm", "600",
                  "-exec", "chmod", "600", "{}", "+"])  # fmt: skip
