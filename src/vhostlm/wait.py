"""Deadline loops in one place: polling what has no event to wait on (a file or socket
appearing, a counter reaching a value), and deadlines for loops that wait on events.

Where an event exists (a condition variable, a process's exit, a queue) wait on it and use
`Deadline` for the time left; `wait_until` is only for things that must be looked at again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from vhostlm.errors import SetupError

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class WaitTimeout(SetupError):
    """What was awaited did not come in time; the message names it and the time."""

    def __init__(self, what: str, timeout: float, last: Exception | None = None) -> None:
        self.what = what
        self.timeout = timeout
        self.last = last
        tail = f" (last: {last})" if last is not None else ""
        super().__init__(f"{what}: timed out after {timeout:g} s{tail}")


class Deadline:
    """A point `timeout` seconds ahead on a monotonic clock, for loops that do more than poll."""

    def __init__(self, timeout: float, clock: Clock = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._end = clock() + timeout

    def left(self) -> float:
        """Seconds until the deadline; 0.0 once it has passed."""
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self._clock() >= self._end


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    what: str,
    interval: float = 0.05,
    retry: tuple[type[Exception], ...] = (),
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> T:
    """The first truthy value of `predicate()`, called every `interval` s (and once more at
    the deadline); WaitTimeout naming `what` after `timeout` s.

    Exceptions of the `retry` types count as "not yet" (the last is named in WaitTimeout and
    chained); any other exception ends the wait at once, so a predicate can give up early,
    e.g. when the process that should create the file has ended.
    """
    if interval <= 0:
        raise ValueError(f"wait_until: interval must be > 0, not {interval}")
    deadline = Deadline(timeout, clock)
    last: Exception | None = None
    while True:
        try:
            value = predicate()
        except retry as exc:
            last, value = exc, None
        if value:
            return value
        left = deadline.left()
        if left <= 0:
            raise WaitTimeout(what, timeout, last) from last
        sleep(min(interval, left))
