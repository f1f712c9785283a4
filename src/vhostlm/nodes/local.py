"""A node on this machine: commands run directly or inside a lab network namespace."""

from __future__ import annotations

import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from vhostlm.errors import SetupError
from vhostlm.nodes.base import Completed, Node
from vhostlm.nodes.process import Process, netns_argv
from vhostlm.nodes.sockets import secure_sockets
from vhostlm.rundir import RunDir


class LocalNode(Node):
    """This machine, optionally inside network namespace `netns` (same filesystem)."""

    def __init__(self, name: str, netns: str | None = None) -> None:
        super().__init__(name)
        self.netns = netns

    @property
    def label(self) -> str:
        """Role and namespace."""
        return f"{self.name} (netns {self.netns})" if self.netns else f"{self.name} (local)"

    def execute(self, argv: Sequence[str], timeout: float = 30.0) -> Completed:
        """Run `argv` in the namespace with an argument list (no shell)."""
        try:
            proc = subprocess.run(
                netns_argv(self.netns, argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return Completed(127, "", f"{argv[0]}: not found")
        except subprocess.TimeoutExpired as exc:
            raise SetupError(
                f"{self.label}: {' '.join(argv)} did not end in {timeout:.0f} s"
            ) from exc
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def process(
        self, name: str, argv: Sequence[str], rundir: RunDir, env: dict[str, str] | None = None
    ) -> Process:
        """A pty-attached program in the namespace."""
        return Process(name, argv, rundir, netns=self.netns, env=env)

    def put(self, local: Path, remote: str) -> None:
        """Copy within this machine (nothing to do for the same file)."""
        if Path(remote).resolve() != local.resolve():
            Path(remote).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, remote)

    def get(self, remote: str, local: Path) -> None:
        """Copy within this machine."""
        if Path(remote).resolve() != local.resolve():
            shutil.copyfile(remote, local)

    def reach(self, remote_socket: str) -> Path:
        """The same path: the namespaces share the filesystem."""
        return Path(remote_socket)

    def which(self, binary: str) -> str | None:
        """`shutil.which`: the namespaces share this machine's filesystem."""
        return shutil.which(binary)

    def _is_socket(self, path: str) -> bool:
        try:
            return stat.S_ISSOCK(Path(path).stat().st_mode)
        except OSError:
            return False

    def secure_sockets(self, directory: str) -> None:
        """chmod 0600 the sockets in `directory`, directly."""
        secure_sockets(Path(directory))
