"""A program the run starts and owns: its output drained to a log, ended by its pid."""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import termios
import threading
from collections.abc import Sequence

from vhostlm.errors import SetupError
from vhostlm.nodes.stream import OutputStream, pump_fd
from vhostlm.rundir import RunDir, proc_starttime


def netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """Prefix `argv` so it runs inside network namespace `netns` (same pid: ip execs)."""
    return (["ip", "netns", "exec", netns] if netns else []) + list(argv)


class Process:
    """One program started in a pseudo-terminal, so interactive tools behave as for a person."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        rundir: RunDir,
        netns: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = netns_argv(netns, argv)
        self.rundir = rundir
        self.env = env
        self.output = OutputStream(name, rundir.log_path(name))
        self._popen: subprocess.Popen[bytes] | None = None
        self._master = -1
        self._pump: threading.Thread | None = None
        self._record: list[int | None] = []

    @property
    def pid(self) -> int:
        """The process id (valid once started)."""
        assert self._popen is not None
        return self._popen.pid

    def start(self) -> Process:
        """Start the program; raise SetupError if its binary cannot be run."""
        self.rundir.record_command(self.name, self.argv)
        master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO  # no echo: the log shows output, commands are in commands.sh
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        env = dict(os.environ, **(self.env or {}))
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            os.close(master)
            os.close(slave)
            raise SetupError(f"{self.name}: cannot start {self.argv[0]}: {exc}") from exc
        os.close(slave)
        self._master = master
        self._record = [self._popen.pid, proc_starttime(self._popen.pid)]
        self.rundir.record("pids", self._record)
        self._pump = pump_fd(master, self.output)
        return self

    def alive(self) -> bool:
        """True while the program runs."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once ended."""
        return None if self._popen is None else self._popen.poll()

    def send(self, line: str) -> None:
        """Type one line into the program's terminal."""
        if not self.alive():
            raise SetupError(f"{self.name} is not running (exit {self.returncode})")
        os.write(self._master, (line + "\n").encode())

    def expect(self, pattern: str, timeout: float, since: int = 0) -> str:
        """Wait for `pattern` in the output after `since`; return the matched text."""
        return self.output.expect(pattern, timeout, since, alive=self.alive).group(0)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """End the program by its pid: `sig`, then SIGKILL after `timeout` seconds."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, sig)
                os.kill(popen.pid, signal.SIGCONT)  # a stopped program acts on it at once
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(popen.pid, signal.SIGKILL)
                popen.wait(5)
        self.rundir.forget("pids", self._record)
        if self._pump is not None:
            self._pump.join(2)
        if self._master >= 0:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = -1
        return popen.returncode

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for the program to end by itself."""
        if self._popen is None:
            return None
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
