"""Continuously drained output of a program, with expect-style waiting.

Programs such as testpmd block when nobody reads their terminal (LAB-FACTS: a vhost
thread stalled mid-migration), so a reader thread drains every byte into a buffer and a
log file from the first moment; callers wait on patterns in that buffer.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from vhostlm.errors import SetupError
from vhostlm.wait import Deadline

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@contextlib.contextmanager
def _waiting(cond: threading.Condition) -> Iterator[None]:
    """Hold `cond` around a wait that Ctrl-C may interrupt.

    The run turns SIGINT/SIGTERM into KeyboardInterrupt in the main thread; raised inside
    `Condition.wait` just after it let go of the lock, the plain `with` would then fail to
    release it and replace the KeyboardInterrupt with a RuntimeError (seen in CI).
    """
    cond.acquire()
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):  # already released by the interrupted wait
            cond.release()


class ExpectTimeout(SetupError):
    """A pattern did not appear in a program's output in time."""


class OutputStream:
    """Thread-safe growing text buffer fed by a reader thread, mirrored to a log file."""

    def __init__(self, name: str, log_path: Path | None) -> None:
        self.name = name
        self._text: list[str] = []
        self._joined = ""
        self._dirty = False
        self._cond = threading.Condition()
        self._closed = False
        self._length = 0  # characters fed so far (after clean-up): the offsets of mark()
        self._partial: list[str] = []  # pieces of the line in progress (no newline yet)
        self._line_ends: list[int] = []  # offset just after each completed line's newline
        self._line_times: list[float] = []  # time.time() when that newline arrived
        self._lines: list[str] = []  # the completed lines, without newline or ANSI escapes
        self._log: IO[str] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def feed(self, data: str) -> None:
        """Append output read from the program."""
        data = ANSI_RE.sub("", data.replace("\r\n", "\n").replace("\r", ""))
        with self._cond:
            self._text.append(data)
            self._dirty = True
            self._add_lines(data, time.time())
            if self._log is not None:
                self._log.write(data)
                self._log.flush()
            self._cond.notify_all()

    def _add_lines(self, data: str, now: float) -> None:
        """Time-stamp the lines `data` completes (called with the lock held).

        Only `data` is split, never the whole text: a chunk's first piece finishes the
        line in progress, its last piece (after the last newline) starts the next one.
        """
        pieces = data.split("\n")
        offset = self._length
        self._length += len(data)
        for piece in pieces[:-1]:
            offset += len(piece) + 1
            if self._partial:
                self._partial.append(piece)
                piece = "".join(self._partial)
                self._partial = []
            self._complete(piece, offset, now)
        if pieces[-1]:  # a list, so a long line fed in many small pieces is joined once
            self._partial.append(pieces[-1])

    def _complete(self, line: str, end: int, now: float) -> None:
        # An escape split across two feed() calls survives feed()'s clean-up: strip it here.
        self._lines.append(ANSI_RE.sub("", line) if "\x1b" in line else line)
        self._line_ends.append(end)
        self._line_times.append(now)

    def timed_lines(self, since: int = 0) -> list[tuple[float, str]]:
        """(arrival time, line) of every completed line that ends after mark `since`.

        The time is time.time() when the line's newline was read, so a line that came in
        pieces carries the time it was finished. A line in progress at `since` counts whole.
        The last unterminated line is included once the stream is closed.
        """
        with self._cond:
            first = bisect.bisect_right(self._line_ends, since)
            return list(zip(self._line_times[first:], self._lines[first:], strict=True))

    def close(self) -> None:
        """Mark the end of the output (the program or connection ended)."""
        with self._cond:
            if self._partial and not self._closed:
                self._complete("".join(self._partial), self._length, time.time())
                self._partial = []
            self._closed = True
            if self._log is not None:
                self._log.close()
                self._log = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once the producer has gone away."""
        return self._closed

    def text(self) -> str:
        """Everything read so far."""
        with self._cond:
            return self._text_locked()

    def _text_locked(self) -> str:
        if self._dirty:
            self._joined = "".join(self._text)
            self._text = [self._joined]
            self._dirty = False
        return self._joined

    def mark(self) -> int:
        """Position just after everything read so far; pass it as `since` later."""
        return len(self.text())

    def since(self, mark: int) -> str:
        """Output read after `mark`."""
        return self.text()[mark:]

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """Wait until `predicate(text)` holds for the whole output; False on timeout or end."""
        deadline = Deadline(timeout)
        with _waiting(self._cond):
            while not predicate(self._text_locked()):
                left = deadline.left()
                if left <= 0 or self._closed:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def expect(
        self,
        pattern: str | re.Pattern[str],
        timeout: float,
        since: int = 0,
        alive: Callable[[], bool] | None = None,
    ) -> re.Match[str]:
        """Wait until `pattern` appears after `since`; raise ExpectTimeout naming it."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = Deadline(timeout)
        with _waiting(self._cond):
            while True:
                match = regex.search(self._text_locked(), since)
                if match:
                    return match
                left = deadline.left()
                if left <= 0 or self._closed or (alive is not None and not alive()):
                    tail = self._text_locked()[-300:].strip().replace("\n", " | ")
                    why = "timed out" if left <= 0 else "output ended"
                    raise ExpectTimeout(
                        f"{self.name}: {why} waiting for {regex.pattern!r}; last output: {tail}"
                    )
                self._cond.wait(min(left, 0.5))


def pump_fd(fd: int, stream: OutputStream) -> threading.Thread:
    """Start a daemon thread that reads `fd` until EOF into `stream`."""

    def run() -> None:
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                stream.feed(chunk.decode("utf-8", errors="replace"))
        finally:
            stream.close()

    thread = threading.Thread(target=run, name=f"pump-{stream.name}", daemon=True)
    thread.start()
    return thread
