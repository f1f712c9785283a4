"""Guest shell commands, answered on the source console or, mid-migration, the destination."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from vhostlm.apps.console import SHELL_PROMPT, Console, GuestShell
from vhostlm.errors import SetupError


def console(tmp_path: Path, name: str) -> tuple[Console, socket.socket]:
    """A Console whose socket's other end the test holds (the guest side)."""
    mine, guest = socket.socketpair()
    con = Console(name, tmp_path / f"{name}.sock", tmp_path / f"{name}.log")
    con._sock = mine  # noqa: SLF001 - a test stands in for QEMU's chardev
    return con, guest


def answer(guest: socket.socket, where: Console, status: int, output: str = "") -> threading.Thread:
    """Read one typed command and print its end marker on `where` (the guest's console now)."""

    def run() -> None:
        typed = guest.recv(4096).decode()
        tag = re.search(r"__END(\w+)__", typed)
        assert tag is not None
        where.output.feed(f"{output}__END{tag.group(1)}__ {status}\n{SHELL_PROMPT}")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_command_output_and_status_on_the_same_console(tmp_path: Path) -> None:
    src, guest = console(tmp_path, "src")
    thread = answer(guest, src, 0, "eth0\n")
    assert GuestShell(src).run("ls /sys/class/net", timeout=5) == "eth0"
    thread.join()


def test_a_failing_command_raises_with_its_status(tmp_path: Path) -> None:
    src, guest = console(tmp_path, "src")
    thread = answer(guest, src, 3, "nope\n")
    with pytest.raises(SetupError, match=r"failed \(3\)"):
        GuestShell(src).run("false", timeout=5)
    thread.join()


def test_the_end_of_a_command_may_arrive_on_the_destination(tmp_path: Path) -> None:
    src, guest = console(tmp_path, "src")
    dst, _ = console(tmp_path, "dst")
    thread = answer(guest, dst, 0)  # the guest switched over while the command ran
    out = GuestShell(src).run("ethtool -L eth0 combined 4", timeout=5, moving_to=GuestShell(dst))
    assert out == ""
    thread.join()
    with pytest.raises(SetupError):  # without moving_to, the source alone never sees it
        thread = answer(guest, dst, 0)
        GuestShell(src).run("true", timeout=0.5)
    thread.join()


def test_an_interrupted_wait_keeps_its_keyboard_interrupt() -> None:
    """Ctrl-C raised inside Condition.wait after it let go of the lock: the waiter sees
    KeyboardInterrupt (not RuntimeError from releasing an unheld lock) and the lock is free."""
    import threading

    from vhostlm.nodes.stream import _waiting

    cond = threading.Condition()
    with pytest.raises(KeyboardInterrupt), _waiting(cond):
        cond.release()  # where an interrupted wait leaves it
        raise KeyboardInterrupt
    assert cond.acquire(blocking=False)
    cond.release()
