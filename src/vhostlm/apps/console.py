"""A guest's serial console on a QEMU unix socket, and a shell session over it."""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import threading
import time
from pathlib import Path

from vhostlm.apps.stream import OutputStream, pump_fd
from vhostlm.errors import SetupError

SHELL_PROMPT = "vhostlm-guest# "


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
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise SetupError(f"{self.name}: cannot connect to {self.path}: {exc}") from exc
                time.sleep(0.05)
        self._sock = sock
        self._pump = pump_fd(sock.fileno(), self.output)
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

    def run(self, command: str, timeout: float = 20.0, check: bool = True) -> str:
        """Run `command`; return its output; raise SetupError on a non-zero status if `check`."""
        tag = secrets.token_hex(4)
        mark = self.console.output.mark()
        sep = " " if command.rstrip().endswith("&") else "; "  # `cmd &; echo` is a syntax error
        self.console.write(f"{command}{sep}echo __END{tag}__ $?\n")
        match = self.console.output.expect(rf"__END{tag}__ (\d+)\n", timeout, since=mark)
        self.console.output.expect(re.escape(SHELL_PROMPT), timeout, since=match.end())
        text = self.console.output.text()[mark : match.start()]
        lines = text.split("\n")
        out = "\n".join(line for line in lines if f"__END{tag}__" not in line).strip()
        if check and match.group(1) != "0":
            raise SetupError(f"guest command failed ({match.group(1)}): {command}: {out[-200:]}")
        return out
