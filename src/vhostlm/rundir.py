"""The run directory: logs, command lines and the record of what a run started.

Everything a person needs to reproduce or debug a run by hand lands here, and the
`resources.json` record lets `lab down` clean up after a run that crashed.
"""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
from pathlib import Path
from typing import Any

RUNTIME_ROOT = Path("/run/vhostlm")


def proc_starttime(pid: int) -> int | None:
    """The start time of `pid` in clock ticks, to tell it from a later reuse of the id."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


class RunDir:
    """A run's output directory (logs, commands) and its private runtime directory.

    Unix socket paths are limited to 108 bytes, so sockets, the hugetlbfs mount and the
    record of started resources live under a short 0700 path in /run/vhostlm/<run id>.
    """

    def __init__(self, path: Path, run_id: str) -> None:
        self.run_id = run_id
        self.path = path.resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        self.logs = self.path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.runtime = RUNTIME_ROOT / run_id
        self.runtime.mkdir(parents=True, exist_ok=True)
        os.chmod(RUNTIME_ROOT, 0o700)
        os.chmod(self.runtime, 0o700)
        self.sockets = self.runtime / "sock"
        self.sockets.mkdir(exist_ok=True)
        os.chmod(self.sockets, 0o700)
        self._lock = threading.Lock()
        self._resources: dict[str, list[Any]] = {"pids": [], "netns": [], "mounts": [], "files": []}

    def log_path(self, name: str) -> Path:
        """Where the full output of program `name` goes."""
        return self.logs / f"{name}.log"

    def socket_path(self, name: str) -> Path:
        """A unix socket path inside the private socket directory."""
        return self.sockets / name

    def record_command(self, name: str, argv: list[str]) -> None:
        """Append a command line, shell-quoted, to commands.sh so it can be re-run by hand."""
        line = f"# {time.strftime('%H:%M:%S')} {name}\n{shlex.join(argv)}\n"
        with self._lock, open(self.path / "commands.sh", "a", encoding="utf-8") as fh:
            fh.write(line)

    def record(self, kind: str, value: Any) -> None:
        """Record a started resource (pid, netns, mount, file) as soon as it exists."""
        with self._lock:
            self._resources.setdefault(kind, []).append(value)
            self._flush()

    def forget(self, kind: str, value: Any) -> None:
        """Drop a resource from the record once it is gone."""
        with self._lock:
            items = self._resources.get(kind, [])
            if value in items:
                items.remove(value)
            self._flush()

    def _flush(self) -> None:
        data = dict(self._resources, output=str(self.path), owner_pid=os.getpid())
        tmp = self.runtime / "resources.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.runtime / "resources.json")
