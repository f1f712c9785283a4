"""The one deadline loop: first truthy value, a typed timeout naming what was awaited, no
busy-spinning, retried and early-ending predicates; on a fake clock, so no test sleeps."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from vhostlm.apps.console import Console
from vhostlm.errors import SetupError
from vhostlm.wait import Deadline, WaitTimeout, wait_until


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_truthy_value_polling_every_interval() -> None:
    clock = FakeClock()
    start = clock.now
    seen = iter([None, 0, "", "socket", "later"])
    got = wait_until(lambda: next(seen), 10, what="x", interval=0.5, clock=clock,
                     sleep=clock.sleep)  # fmt: skip
    assert got == "socket"
    assert clock.sleeps == [0.5, 0.5, 0.5]
    assert clock.now == start + 1.5


def test_truthy_at_once_does_not_sleep() -> None:
    clock = FakeClock()
    assert wait_until(lambda: 7, 10, what="x", clock=clock, sleep=clock.sleep) == 7
    assert clock.sleeps == []


def test_timeout_names_what_and_how_long_after_a_last_look_at_the_deadline() -> None:
    clock = FakeClock()
    start = clock.now
    calls: list[float] = []

    def never() -> bool:
        calls.append(clock.now - start)
        return False

    with pytest.raises(WaitTimeout) as info:
        wait_until(never, 1.0, what="socket /run/x/qmp.sock", interval=0.3, clock=clock,
                   sleep=clock.sleep)  # fmt: skip
    assert isinstance(info.value, SetupError)
    assert str(info.value) == "socket /run/x/qmp.sock: timed out after 1 s"
    assert (info.value.what, info.value.timeout, info.value.last) == ("socket /run/x/qmp.sock",
                                                                      1.0, None)  # fmt: skip
    assert calls == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])  # the last sleep is cut short
    assert clock.sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert clock.now == pytest.approx(start + 1.0)


def test_truthy_at_the_deadline_itself_counts() -> None:
    clock = FakeClock()
    end = clock.now + 1.0
    got = wait_until(lambda: clock.now >= end, 1.0, what="x", interval=0.4, clock=clock,
                     sleep=clock.sleep)  # fmt: skip
    assert got is True
    assert clock.now == pytest.approx(end)


def test_zero_timeout_looks_once_and_never_sleeps() -> None:
    clock = FakeClock()
    calls: list[int] = []
    with pytest.raises(WaitTimeout, match=r"^x: timed out after 0 s$"):
        wait_until(lambda: calls.append(1), 0, what="x", clock=clock, sleep=clock.sleep)
    assert calls == [1]
    assert clock.sleeps == []


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_no_interval_that_would_busy_spin(interval: float) -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="interval"):
        wait_until(lambda: 1, 1, what="x", interval=interval, clock=clock, sleep=clock.sleep)


def test_retry_errors_are_not_yet_and_the_last_one_is_named_and_chained() -> None:
    clock = FakeClock()
    errors = iter([FileNotFoundError(2, "No such file"), ConnectionRefusedError(111, "refused")])

    def connect() -> str:
        raise next(errors, ConnectionRefusedError(111, "refused"))

    with pytest.raises(WaitTimeout) as info:
        wait_until(connect, 0.2, what="console", interval=0.1, retry=(OSError,), clock=clock,
                   sleep=clock.sleep)  # fmt: skip
    assert isinstance(info.value.last, ConnectionRefusedError)
    assert info.value.__cause__ is info.value.last
    assert str(info.value) == "console: timed out after 0.2 s (last: [Errno 111] refused)"


def test_retry_error_then_success_returns_the_value() -> None:
    clock = FakeClock()
    outcomes: list[object] = [OSError("not yet"), OSError("not yet"), "connected"]

    def attempt() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return str(item)

    assert wait_until(attempt, 5, what="x", retry=(OSError,), clock=clock,
                      sleep=clock.sleep) == "connected"  # fmt: skip
    assert len(clock.sleeps) == 2


def test_other_errors_end_the_wait_at_once() -> None:
    clock = FakeClock()

    def gone() -> bool:
        raise SetupError("the program that makes it ended")

    with pytest.raises(SetupError, match="ended") as info:
        wait_until(gone, 10, what="x", retry=(OSError,), clock=clock, sleep=clock.sleep)
    assert not isinstance(info.value, WaitTimeout)
    assert clock.sleeps == []


def test_deadline_left_and_expired() -> None:
    clock = FakeClock()
    deadline = Deadline(2.0, clock)
    assert deadline.left() == 2.0 and not deadline.expired()
    clock.sleep(1.5)
    assert deadline.left() == pytest.approx(0.5) and not deadline.expired()
    clock.sleep(0.5)
    assert deadline.left() == 0.0 and deadline.expired()
    clock.sleep(3)
    assert deadline.left() == 0.0 and deadline.expired()


def test_real_clock_sees_a_file_appear(tmp_path: Path) -> None:
    path = tmp_path / "ready"
    timer = threading.Timer(0.05, path.touch)
    timer.start()
    try:
        assert wait_until(path.exists, 5, what=str(path), interval=0.01) is True
    finally:
        timer.cancel()


def test_console_connect_names_the_socket_and_its_last_error(tmp_path: Path) -> None:
    con = Console("console-src", tmp_path / "con.sock", tmp_path / "con.log")
    with pytest.raises(WaitTimeout) as info:
        con.connect(timeout=0.1)
    assert str(info.value).startswith(f"console-src: connection to {tmp_path}/con.sock: timed out")
    assert isinstance(info.value.last, FileNotFoundError)


def test_console_connect_waits_for_the_socket_to_appear(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    timer = threading.Timer(0.1, lambda: (server.bind(str(tmp_path / "con.sock")),
                                          server.listen(1)))  # fmt: skip
    timer.start()
    con = Console("console-src", tmp_path / "con.sock", tmp_path / "con.log")
    try:
        con.connect(timeout=5)
        assert con._sock is not None  # noqa: SLF001
    finally:
        timer.cancel()
        con.close()
        server.close()
