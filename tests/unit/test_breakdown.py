"""The outage breakdown on synthetic moments; every expected value is worked out by hand."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from vhostlm.backends.base import VhostBackend
from vhostlm.backends.testpmd import TestpmdBackend
from vhostlm.measure.breakdown import (
    Segment,
    biggest,
    breakdown,
    moment_times,
    ordered,
    out_of_order,
    segment_label,
)
from vhostlm.nodes.stream import OutputStream

T = 1000.0  # epoch seconds; the moments below are T + a few ms


def ms(value: float) -> float:
    return T + value / 1000


def seg(b: object) -> list[tuple[str, str, float, bool]]:
    """(start, end, ms, in_outage) of each segment of a breakdown."""
    return [(s.start, s.end, s.ms, s.in_outage) for s in b.segments]  # type: ignore[attr-defined]


def test_the_issue_example_adds_up_to_the_outage() -> None:
    """Last reply 0, STOP 2, RESUME 14, ready 75, first reply 84, announce 90 (ms)."""
    marks = {"migrate": ms(-5000), "stop": ms(2), "resume": ms(14), "ready": ms(75),
             "announce": ms(90), "completed": ms(20)}  # fmt: skip
    b = breakdown(marks, (ms(0), ms(84)), uncertainty_ms=3.0)
    assert [m.name for m in b.moments] == [
        "last_reply", "stop", "resume", "ready", "first_reply", "announce",
    ]  # fmt: skip
    assert [m.ms for m in b.moments] == [0.0, 2.0, 14.0, 75.0, 84.0, 90.0]
    assert seg(b) == [
        ("last_reply", "stop", 2.0, True),
        ("stop", "resume", 12.0, True),
        ("resume", "ready", 61.0, True),
        ("ready", "first_reply", 9.0, True),
        ("first_reply", "announce", 6.0, False),
    ]
    assert [s.label for s in b.segments] == [
        "until the source's STOP",
        "QEMU stop-to-resume",
        "until the backup's vhost ring was enabled",
        "to the first reply",
        "until the announce",
    ]
    assert (b.outage_ms, b.sum_ms, b.difference_ms) == (84.0, 84.0, 0.0)
    assert b.within_uncertainty is True
    assert b.biggest is not None and (b.biggest.end, b.biggest.ms) == ("ready", 61.0)
    assert b.outside == ["announce"] and b.missing == [] and b.out_of_order == []


def test_missing_moments_merge_their_neighbours() -> None:
    """No ready line, no announce: RESUME (14) runs straight to the first reply (84)."""
    b = breakdown({"stop": ms(2), "resume": ms(14)}, (ms(0), ms(84)), uncertainty_ms=3.0)
    assert seg(b) == [
        ("last_reply", "stop", 2.0, True),
        ("stop", "resume", 12.0, True),
        ("resume", "first_reply", 70.0, True),
    ]
    assert b.missing == ["ready", "announce"]
    assert b.sum_ms == 84.0 and b.difference_ms == 0.0
    assert b.biggest is not None and b.biggest.label == "to the first reply"


def test_a_ready_line_before_resume_is_shown_where_it_was() -> None:
    """STOP 2, ready 10, RESUME 14, first reply 84: the ready segment ends at 10 ms."""
    b = breakdown({"stop": ms(2), "resume": ms(14)}, (ms(0), ms(84)), ready=ms(10), dest="host")
    assert seg(b) == [
        ("last_reply", "stop", 2.0, True),
        ("stop", "ready", 8.0, True),
        ("ready", "resume", 4.0, True),
        ("resume", "first_reply", 70.0, True),
    ]
    assert [s.label for s in b.segments][1:3] == [
        "until the host's vhost ring was enabled",
        "until the host's RESUME",
    ]
    assert b.out_of_order == ["ready before resume"]
    assert b.sum_ms == 84.0 and b.within_uncertainty is None  # no uncertainty given


def test_moments_out_of_order_and_outside_the_outage() -> None:
    """As seen on the lab: the last reply (20.9) came after STOP (0) and RESUME (12.5);
    then ready 24.0, announce 56.9, first reply 59.7. Given in no particular order."""
    marks = {"announce": ms(56.9), "resume": ms(12.5), "ready": ms(24.0), "stop": ms(0.0)}
    b = breakdown(marks, (ms(20.9), ms(59.7)), uncertainty_ms=8.3)
    assert [m.name for m in b.moments] == [
        "stop", "resume", "last_reply", "ready", "announce", "first_reply",
    ]  # fmt: skip
    assert [m.ms for m in b.moments] == [-20.9, -8.4, 0.0, 3.1, 36.0, 38.8]
    assert seg(b) == [
        ("stop", "resume", 12.5, False),
        ("resume", "last_reply", 8.4, False),
        ("last_reply", "ready", 3.1, True),
        ("ready", "announce", 32.9, True),
        ("announce", "first_reply", 2.8, True),
    ]
    assert b.outside == ["stop", "resume"]
    assert (b.outage_ms, b.sum_ms, b.difference_ms) == (38.8, 38.8, 0.0)
    assert b.biggest is not None and (b.biggest.end, b.biggest.ms) == ("announce", 32.9)
    assert b.out_of_order == []  # STOP < RESUME < ready < first reply still holds


def test_a_first_reply_before_the_ready_line_is_out_of_order() -> None:
    """Ready at 90 ms, after the first reply at 84: a clock or a late line, flagged."""
    b = breakdown({"stop": ms(2), "resume": ms(14)}, (ms(0), ms(84)), ready=ms(90))
    assert b.out_of_order == ["first_reply before ready"]
    assert b.outside == ["ready"]
    assert seg(b)[-1] == ("first_reply", "ready", 6.0, False)
    assert b.sum_ms == 84.0


def test_without_probes_every_segment_counts_and_there_is_no_outage() -> None:
    """Seed traffic: STOP 0, RESUME 12, ready 30, announce 45 (ms after STOP)."""
    marks = {"stop": ms(0), "resume": ms(12), "ready": ms(30), "announce": ms(45)}
    b = breakdown(marks, None, uncertainty_ms=None)
    assert [m.ms for m in b.moments] == [0.0, 12.0, 30.0, 45.0]  # after the first moment
    assert [s.ms for s in b.segments] == [12.0, 18.0, 15.0]
    assert not any(s.in_outage for s in b.segments)
    assert (b.outage_ms, b.sum_ms, b.difference_ms, b.within_uncertainty) == (
        None, 45.0, None, None,
    )  # fmt: skip
    assert b.missing == ["last_reply", "first_reply"] and b.outside == []
    assert b.biggest is not None and b.biggest.end == "ready"


def test_nothing_known_is_an_empty_breakdown() -> None:
    b = breakdown({}, None)
    assert (b.moments, b.segments, b.sum_ms, b.biggest) == ([], [], 0.0, None)
    assert b.missing == ["last_reply", "stop", "resume", "ready", "first_reply", "announce"]


def test_moment_times_takes_only_moments_and_the_given_ready() -> None:
    marks = {"migrate": 1.0, "stop": 2.0, "ready": 3.0, "completed": 4.0}
    assert moment_times(marks, None) == {"stop": 2.0, "ready": 3.0}
    assert moment_times(marks, (1.5, 5.0), ready=3.5) == {
        "stop": 2.0, "ready": 3.5, "last_reply": 1.5, "first_reply": 5.0,
    }  # fmt: skip


def test_ties_keep_the_expected_order_and_a_zero_segment() -> None:
    assert ordered({"resume": 2.0, "stop": 2.0, "last_reply": 1.0}) == [
        ("last_reply", 1.0), ("stop", 2.0), ("resume", 2.0),
    ]  # fmt: skip
    b = breakdown({"stop": ms(5), "resume": ms(5)}, (ms(0), ms(10)))
    assert seg(b) == [
        ("last_reply", "stop", 5.0, True),
        ("stop", "resume", 0.0, True),
        ("resume", "first_reply", 5.0, True),
    ]


def test_rounding_is_the_only_difference() -> None:
    """Three segments of 0.3333 ms each round to 0.333: they sum to 0.999 of a 1.0 ms gap."""
    b = breakdown({"stop": ms(0.3333), "resume": ms(0.6666)}, (ms(0), ms(1.0)), None, 0.001)
    assert [s.ms for s in b.segments] == [0.333, 0.333, 0.333]
    assert (b.sum_ms, b.outage_ms, b.difference_ms) == (0.999, 1.0, -0.001)
    assert b.within_uncertainty is True


def test_helpers() -> None:
    assert segment_label("resume", "stop") == "until the source's STOP"
    assert segment_label("x", "y") == "until y"
    a, b = Segment("a", "b", 3.0, "", True), Segment("b", "c", 3.0, "", True)
    assert biggest([a, b]) is a and biggest([]) is None
    assert out_of_order({"resume": 1.0, "stop": 2.0, "first_reply": 0.5}) == [
        "resume before stop", "first_reply before resume",
    ]  # fmt: skip


def test_as_dict_is_plain_data() -> None:
    d = breakdown({"stop": ms(2)}, (ms(0), ms(4)), ready_line="virtio is now ready").as_dict()
    assert d["segments"][0] == {
        "start": "last_reply", "end": "stop", "ms": 2.0,
        "label": "until the source's STOP", "in_outage": True,
    }  # fmt: skip
    assert d["moments"][0] == {"name": "last_reply", "at": pytest.approx(T), "ms": 0.0}
    assert d["biggest"]["end"] == "stop" and d["ready_line"] == "virtio is now ready"  # 2 = 2
    assert d["to"] == "backup"


# --- the ready moment: the backend's line, timed as it arrived ---------------------------


class _LogOnly(VhostBackend):
    """A backend that is only its output (testpmd's ready pattern), fed by the test."""

    ready_re = TestpmdBackend.ready_re

    def __init__(self) -> None:
        self._process = SimpleNamespace(output=OutputStream("backup testpmd", None))

    @property
    def process(self) -> Any:
        return self._process

    def start(self) -> None: ...
    def forward(self) -> None: ...
    def wait_guest_ready(self, timeout: float, since: int = 0) -> str:
        return ""

    def counters(self, port: int = 0) -> Any: ...
    def stop(self) -> None: ...


SOCK = "VHOST_CONFIG: (/run/vhostlm/x/sock/virtio_net-backup-vhost.sock)"


def test_ready_at_is_the_first_whole_ready_line_after_the_mark() -> None:
    backend = _LogOnly()
    out = backend.process.output
    out.feed(f"{SOCK} virtio is now ready for processing.\n")  # the boot's, before `migrate`
    since = backend.mark()
    out.feed(f"{SOCK} read message VHOST_USER_SET_VRING_KICK\n{SOCK} virtio is now ready")
    out.feed(" for processing.")
    assert backend.ready_at(since) is None  # the line has not ended yet
    before = time.time()
    out.feed("\nPort 0: link state change event\n")
    after = time.time()
    found = backend.ready_at(since, timeout=1)
    assert found is not None
    at, line = found
    assert before <= at <= after  # when its newline arrived
    assert line == f"{SOCK} virtio is now ready for processing."


def test_ready_at_without_a_line_or_a_pattern_is_none() -> None:
    backend = _LogOnly()
    backend.process.output.feed(f"{SOCK} read message VHOST_USER_GET_VRING_BASE\n")
    assert backend.ready_at(0, timeout=0) is None
    backend.process.output.close()  # the program ended: no waiting either
    assert backend.ready_at(0, timeout=30) is None
    plain = _LogOnly()
    plain.ready_re = None
    plain.process.output.feed(f"{SOCK} virtio is now ready for processing.\n")
    assert plain.ready_at(0) is None
