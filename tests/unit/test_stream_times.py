"""OutputStream.timed_lines: each line carries the time its newline arrived."""

from __future__ import annotations

import pytest

from vhostlm.nodes import stream as stream_mod
from vhostlm.nodes.stream import OutputStream


class Clock:
    """A settable stand-in for time.time() as the stream module sees it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(stream_mod.time, "time", fake)
    return fake


def test_line_split_across_feeds_has_the_time_of_its_newline(clock: Clock) -> None:
    out = OutputStream("t", None)
    out.feed("VHOST_CONFIG: (/s) read mes")
    clock.now = 1001.0
    out.feed("sage VHOST_USER_GET_VRING_BASE\nsecond ")
    clock.now = 1002.5
    out.feed("line\nthird, not finished")
    assert out.timed_lines() == [
        (1001.0, "VHOST_CONFIG: (/s) read message VHOST_USER_GET_VRING_BASE"),
        (1002.5, "second line"),
    ]


def test_many_lines_in_one_chunk_share_its_time(clock: Clock) -> None:
    out = OutputStream("t", None)
    out.feed("a\nb\n\nc\n")
    assert out.timed_lines() == [(1000.0, "a"), (1000.0, "b"), (1000.0, ""), (1000.0, "c")]


def test_since_a_mark(clock: Clock) -> None:
    out = OutputStream("t", None)
    out.feed("before\n")
    mark = out.mark()
    clock.now = 1003.0
    out.feed("after\n")
    assert out.timed_lines(mark) == [(1003.0, "after")]
    assert [line for _, line in out.timed_lines()] == ["before", "after"]
    assert out.timed_lines(out.mark()) == []


def test_a_line_in_progress_at_the_mark_counts_whole(clock: Clock) -> None:
    out = OutputStream("t", None)
    out.feed("half ")
    mark = out.mark()
    clock.now = 1004.0
    out.feed("done\n")
    assert out.timed_lines(mark) == [(1004.0, "half done")]


def test_crlf_and_ansi_escapes_split_across_feeds(clock: Clock) -> None:
    out = OutputStream("t", None)
    out.feed("\x1b[0;32mgreen\x1b[0m\r")
    out.feed("\nred\x1b[")
    out.feed("31m!\r\n")
    assert out.timed_lines() == [(1000.0, "green"), (1000.0, "red!")]
    assert out.text().startswith("green\n")  # the text itself keeps its old clean-up


def test_close_completes_the_last_line(clock: Clock) -> None:
    out = OutputStream("t", None)
    out.feed("ok\nKernel panic - not syncing")
    assert [line for _, line in out.timed_lines()] == ["ok"]
    clock.now = 1009.0
    out.close()
    assert out.timed_lines()[-1] == (1009.0, "Kernel panic - not syncing")
    out.close()  # a second close adds nothing
    assert len(out.timed_lines()) == 2


def test_feeding_is_incremental(clock: Clock) -> None:
    """Thousands of small feeds keep every line, in order, with the text unchanged."""
    out = OutputStream("t", None)
    for i in range(2000):
        out.feed(f"line {i}\n")
    lines = out.timed_lines()
    assert len(lines) == 2000 and lines[-1] == (1000.0, "line 1999")
    assert out.text().count("\n") == 2000


def test_a_long_line_fed_a_character_at_a_time(clock: Clock) -> None:
    out = OutputStream("t", None)
    for ch in "x" * 5000:
        out.feed(ch)
    assert out.timed_lines() == []
    clock.now = 1001.0
    out.feed("\n")
    assert out.timed_lines() == [(1001.0, "x" * 5000)]
