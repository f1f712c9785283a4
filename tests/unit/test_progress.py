"""Tests of the live progress display, in CI (line per phase) and TTY (repainted) modes."""

from __future__ import annotations

import io
import threading
import time

from vhostlm.report.progress import Progress


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_tty_prints_one_line_per_phase() -> None:
    out, clock = io.StringIO(), FakeClock()
    with Progress(out, clock=clock) as progress:
        assert progress.tty is False
        progress.phase("virtio_pmd", "booting")
        clock.now += 12.3
        progress.phase("virtio_pmd", "migrating")
        clock.now += 100
        progress.phase("virtio_net", "lab")
    assert out.getvalue() == (
        "[  0.0s] virtio_pmd: booting\n[ 12.3s] virtio_pmd: migrating\n[112.3s] virtio_net: lab\n"
    )
    assert all(t.name != "vhostlm-progress" for t in threading.enumerate())  # no thread in CI


def test_non_tty_note_and_no_phase_after_close() -> None:
    out = io.StringIO()
    progress = Progress(out, clock=FakeClock())
    progress.phase("virtio_net", "traffic")
    progress.note("lab up: 4 namespaces")
    progress.close()
    progress.close()  # idempotent
    progress.phase("virtio_net", "late")
    assert out.getvalue() == "[  0.0s] virtio_net: traffic\nlab up: 4 namespaces\n"


def test_status_line_shows_time_in_phase() -> None:
    clock = FakeClock()
    progress = Progress(io.StringIO(), clock=clock)
    clock.now += 8.2
    progress.phase("virtio_pmd", "migrating")
    clock.now += 4.1
    assert progress.status_line() == "[ 12.3s] virtio_pmd: migrating (4.1s in phase)"
    progress.close()


def test_tty_repaints_in_place_and_ends_line() -> None:
    out = TtyStream()
    with Progress(out, interval=0.01) as progress:
        assert progress.tty is True
        progress.phase("virtio_pmd", "migrating")
        time.sleep(0.1)
        repaints = out.getvalue().count("\r\x1b[2K")
        assert repaints >= 3  # the thread repaints by itself
        assert "\n" not in out.getvalue()
    text = out.getvalue()
    assert text.endswith(" in phase)\n")
    assert text.count("\n") == 1
    assert text.rsplit("\r\x1b[2K", 1)[1].startswith("[  0.")
    assert "virtio_pmd: migrating (" in text
    assert all(t.name != "vhostlm-progress" for t in threading.enumerate())


def test_tty_note_clears_status_line_first() -> None:
    out = TtyStream()
    progress = Progress(out, interval=60, clock=FakeClock())
    progress.phase("virtio_net", "booting")
    progress.note("KVM hangs, falling back to TCG")
    progress.close()
    text = out.getvalue()
    assert "\r\x1b[2KKVM hangs, falling back to TCG\n" in text
    # the status line is repainted after the note and ended on close
    after = text.split("TCG\n", 1)[1]
    assert after.startswith("\r\x1b[2K[  0.0s] virtio_net: booting (0.0s in phase)")
    assert text.endswith("\n")


def test_tty_close_without_phase_writes_nothing() -> None:
    out = TtyStream()
    with Progress(out):
        pass
    assert out.getvalue() == ""


def test_broken_stream_does_not_raise() -> None:
    out = io.StringIO()
    progress = Progress(out, clock=FakeClock())
    out.close()
    progress.phase("virtio_pmd", "booting")  # ValueError on write is swallowed
    progress.close()
