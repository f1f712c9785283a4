"""A guest's serial console on a QEMU unix socket, and a shell session over it."""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import threading
from pathlib import Path

from vhostlm.errors import SetupError
from vhostlm.guests.contract import PROMPT
from vhostlm.nodes.stream import OutputStream, pump_fd
from vhostlm.wait import Deadline, wait_until

SHELL_PROMPT = PROMPT  # the prompt the guest image's /init gives its shell


class Console:
    """A connection to a QEMU serial chardev socket, drained into a log from the start."""

    def __init__(self, name: str, path: Path, log_path: Path) -> None:
        self.name = name
        self.path = path
        self.output = OutputStream(name, log_path)
        self._sock: socket.socket | None = None
        self._pump: threading.Thread | None = None

    def connect(self, timeout: float = 10.0) -> Console:
        """Connect to the socket QEMU listens on (retrying until it appears)."""

        def attempt() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
            except OSError:
                sock.close()
                raise
            return sock

        what = f"{self.name}: connection to {self.path}"
        self._sock = wait_until(attempt, timeout, what=what, retry=(OSError,))
        self._pump = pump_fd(self._sock.fileno(), self.output)
        return self

    def write(self, text: str) -> None:
        """Type `text` on the console."""
        if self._sock is None:
            raise SetupError(f"{self.name}: console not connected")
        self._sock.sendall(text.encode())

    def close(self) -> None:
        """Disconnect (the guest keeps running)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._pump is not None:
            self._pump.join(2)


class GuestShell:
    """Commands run in the guest's busybox shell, each ended by a unique marker."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def wait_prompt(self, timeout: float) -> None:
        """Wait until the shell is ready to take a command."""
        self.console.output.expect(re.escape(SHELL_PROMPT), timeout)

    def run(
        self,
        command: str,
        timeout: float = 20.0,
        check: bool = True,
        moving_to: GuestShell | None = None,
    ) -> str:
        """Run `command`; return its output; raise SetupError on a non-zero status if `check`.

        With `moving_to`, the guest may be migrating to that shell's console meanwhile: the
        command's end is awaited on both consoles (its typed input migrates with the guest).
        """
        tag = secrets.token_hex(4)
        shells = [self] if moving_to is None else [self, moving_to]
        marks = [sh.console.output.mark() for sh in shells]
        sep = " " if command.rstrip().endswith("&") else "; "  # `cmd &; echo` is a syntax error
        self.console.write(f"{command}{sep}echo __END{tag}__ $?\n")
        end = re.compile(rf"__END{tag}__ (\d+)\n")
        deadline = Deadline(timeout)

        def ended_here(text: str) -> bool:
            return bool(end.search(text, marks[0]))

        while True:
            for shell, mark in zip(shells, marks, strict=True):
                out = shell.console.output
                if len(shells) == 1 or end.search(out.text(), mark):
                    match = out.expect(end, deadline.left(), since=mark)
                    out.expect(re.escape(SHELL_PROMPT), timeout, since=match.end())
                    return self._result(
                        command, tag, out.text()[mark : match.start()], match, check
                    )
            if deadline.expired():
                raise SetupError(f"guest: no end of {command!r} on any console in {timeout:.0f} s")
            self.console.output.wait_for(ended_here, 0.1)  # the source's end, or a 0.1 s tick

    @staticmethod
    def _result(command: str, tag: str, text: str, match: re.Match[str], check: bool) -> str:
        lines = text.split("\n")
        out = "\n".join(line for line in lines if f"__END{tag}__" not in line).strip()
        if check and match.group(1) != "0":
            raise SetupError(f"guest command failed ({match.group(1)}): {command}: {out[-200:]}")
        return out
