"""Live progress of a run: which case, which phase, how long.

On a terminal one status line is repainted in place; elsewhere (CI logs) each phase change
is printed once, so logs stay short and readable.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_CLEAR = "\r\x1b[2K"


class Progress:
    """Phase display; use as a context manager and call `phase()` as the run moves on."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self._stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self._interval = interval
        self._clock = clock
        self._t0 = clock()
        self._phase_t0 = self._t0
        self._label = ""
        self._shown = False  # a status line is on screen (TTY mode)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def phase(self, case: str, name: str) -> None:
        """Record that `case` entered phase `name`; printed at once (non-TTY) or repainted."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            self._label = f"{case}: {name}"
            self._phase_t0 = now
            if self.tty:
                self._paint(now)
            else:
                self._write(f"{self._stamp(now)} {self._label}\n")
        if self.tty and self._thread is None:
            self._start()

    def note(self, msg: str) -> None:
        """Print a one-off line above the status line without corrupting it."""
        with self._lock:
            if self.tty and self._shown:
                self._write(f"{_CLEAR}{msg}\n")
                self._shown = False
                if not self._closed:
                    self._paint(self._clock())
            else:
                self._write(f"{msg}\n")

    def close(self) -> None:
        """Stop the repaint thread and end the status line; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.tty and self._shown:
                self._paint(self._clock())
                self._write("\n")
                self._shown = False

    def status_line(self) -> str:
        """The current status text, e.g. `[ 12.3s] virtio_pmd: migrating (4.1s in phase)`."""
        with self._lock:
            return self._status(self._clock())

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="vhostlm-progress", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                if self._closed:
                    return
                self._paint(self._clock())

    def _stamp(self, now: float) -> str:
        return f"[{now - self._t0:5.1f}s]"

    def _status(self, now: float) -> str:
        return f"{self._stamp(now)} {self._label} ({now - self._phase_t0:.1f}s in phase)"

    def _paint(self, now: float) -> None:
        """Repaint the status line; caller holds the lock."""
        if self._label:
            self._write(_CLEAR + self._status(now))
            self._shown = True

    def _write(self, text: str) -> None:
        """Write and flush; a closed or broken stream must not kill the run."""
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self._stop.set()
