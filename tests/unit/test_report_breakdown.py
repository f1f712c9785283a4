"""The outage breakdown in the reports: the summary line and report.html's stacked bars,
from a stream analysed by `probe_figures` and breakdowns made by `add_breakdowns`.

Probes go every ms for 8 s from T0 with a 0.3 ms round trip. Migration 1 (to the backup)
loses probes 5000-5047: last reply 4.9993 s, first 5.0483 s, a 49.0 ms outage; STOP 5.000,
RESUME 5.030, ready 5.040, announce 5.045. Migration 2 (to the host) loses 7000-7019: last
reply 6.9993, first 7.0203, 21.0 ms; STOP 7.000, ready 7.010 (before RESUME), RESUME 7.012
(its probes are only lost when the case has both migrations).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_html import Page, synthetic_run
from vhostlm.plans.traffic import add_breakdowns, probe_figures
from vhostlm.report.figures import breakdown_text
from vhostlm.report.html import render_html
from vhostlm.report.results import CaseResult
from vhostlm.report.summary import render_summary

T0 = 1800000000.0
READY_LINE = "VHOST_CONFIG: (/run/x/backup-vhost.sock) virtio is now ready for processing."
LEG1 = {"migrate": T0 + 1.0, "stop": T0 + 5.0, "resume": T0 + 5.03, "completed": T0 + 5.1,
        "ready": T0 + 5.04, "announce": T0 + 5.045}  # fmt: skip
LEG2 = {"migrate": T0 + 6.0, "stop": T0 + 7.0, "resume": T0 + 7.012, "completed": T0 + 7.1,
        "ready": T0 + 7.01}  # fmt: skip
LINE1 = (
    "outage 49.0 ms: 0.7 ms until the source's STOP, 30.0 ms QEMU stop-to-resume, "
    "10.0 ms until the backup's vhost ring was enabled, 5.0 ms until the announce, "
    "3.3 ms to the first reply; the biggest: 30.0 ms QEMU stop-to-resume"
)
LINE2 = (
    "outage 21.0 ms: 0.7 ms until the source's STOP, 10.0 ms until the host's vhost ring "
    "was enabled, 2.0 ms until the host's RESUME, 8.3 ms to the first reply; the biggest: "
    "10.0 ms until the host's vhost ring was enabled"
)


def measured(legs_marks: list[dict[str, float]]) -> dict[str, Any]:
    """`measure` as Traffic.finish makes it, for one or both migrations."""
    send = [T0 + i / 1000 for i in range(8000)]
    lost = {*range(5000, 5048), *(range(7000, 7020) if len(legs_marks) > 1 else ())}
    replies = [[i, t + 0.0003] for i, t in enumerate(send) if i not in lost]
    rx = {"read_lag_ms": [0.5] * 99 + [4.0]}  # p99: the 99th of 100, 0.5; max 4.0
    data = {"pps": 1000.0, "t0": T0, "sent": 8000, "send_ts": send, "replies": replies, "rx": rx}
    measure, per_leg = probe_figures(data, legs_marks, 1000.0)
    legs = [{"to": to, **extra} for to, extra in zip(("backup", "host"), per_leg, strict=False)]
    add_breakdowns(legs, legs_marks, {0: READY_LINE})
    return {"pps": 1000.0, "resolution_ms": 1.0, **measure, "legs": legs,
            "breakdown": legs[0]["breakdown"]}  # fmt: skip


def case_of(legs_marks: list[dict[str, float]]) -> CaseResult:
    case = CaseResult(name="virtio_net", measure=measured(legs_marks))
    case.finish()
    return case


def test_the_summary_line_names_every_segment_and_the_biggest() -> None:
    run = synthetic_run([case_of([LEG1])])
    assert f"\n  {LINE1}\n" in render_summary(run)


def test_each_migration_has_its_line_in_the_summary() -> None:
    text = render_summary(synthetic_run([case_of([LEG1, LEG2])]))
    assert f"\n  migration 1 → backup: {LINE1}\n" in text
    assert f"\n  migration 2 → host: {LINE2}\n" in text


def test_the_breakdown_adds_up_and_keeps_the_ready_line() -> None:
    bd = measured([LEG1])["breakdown"]
    assert [s["ms"] for s in bd["segments"]] == [0.7, 30.0, 10.0, 5.0, 3.3]
    assert (bd["outage_ms"], bd["sum_ms"], bd["difference_ms"]) == (49.0, 49.0, 0.0)
    assert bd["uncertainty_ms"] == 3.0  # 1 ms send gap at each edge + 1 ms noise p99
    assert bd["ready_line"] == READY_LINE and bd["within_uncertainty"] is True


def test_moments_outside_the_outage_are_named_after_it() -> None:
    """A last reply 21 ms after STOP and 8.5 ms after RESUME, an announce after the
    first reply: as seen on the lab, in words."""
    bd = {
        "outage_ms": 38.8,
        "segments": [
            {"end": "resume", "ms": 12.5, "label": "QEMU stop-to-resume", "in_outage": False},
            {"end": "last_reply", "ms": 8.5, "label": "until the last reply", "in_outage": False},
            {"end": "first_reply", "ms": 38.8, "label": "to the first reply", "in_outage": True},
            {"end": "announce", "ms": 2.0, "label": "until the announce", "in_outage": False},
        ],
        "moments": [{"name": "stop", "ms": -21.0}, {"name": "resume", "ms": -8.5},
                    {"name": "last_reply", "ms": 0.0}, {"name": "first_reply", "ms": 38.8},
                    {"name": "announce", "ms": 40.8}],
    }  # fmt: skip
    assert breakdown_text(bd) == (
        "outage 38.8 ms: 38.8 ms to the first reply (STOP 21.0 ms before the last reply, "
        "RESUME 8.5 ms before the last reply, the announce 2.0 ms after the first reply)"
    )


def test_without_probes_the_switch_over_is_broken_down() -> None:
    bd = {"outage_ms": None, "segments": [
        {"end": "resume", "ms": 12.0, "label": "QEMU stop-to-resume", "in_outage": False},
        {"end": "ready", "ms": 18.0, "label": "until the backup's vhost ring was enabled",
         "in_outage": False},
    ]}  # fmt: skip
    assert breakdown_text(bd) == (
        "switch-over: 12.0 ms QEMU stop-to-resume, 18.0 ms until the backup's vhost ring was "
        "enabled; the biggest: 18.0 ms until the backup's vhost ring was enabled"
    )
    assert breakdown_text({"segments": "junk"}) is None


def test_report_draws_one_stacked_bar_per_migration() -> None:
    page = Page(render_html(synthetic_run([case_of([LEG1, LEG2])])))
    bars = page.with_class("bd-bar")
    assert len(bars) == 2
    assert bars[0]["aria-label"] == f"migration 1 → backup: {LINE1}"
    segs = page.with_class("bd-seg")
    assert len(segs) == 5 + 4
    # widths: each segment's share of 49.0 ms, then of 21.0 ms
    widths = [s["style"] for s in segs]
    assert widths[:5] == [f"flex-basis: {w}%" for w in ("1.429", "61.224", "20.408",
                                                        "10.204", "6.735")]  # fmt: skip
    assert widths[5:] == [f"flex-basis: {w}%" for w in ("3.333", "47.619", "9.524", "39.524")]
    big = [s for s in segs if "bd-big" in s["class"].split()]
    assert [s["title"] for s in big] == [
        "30 ms QEMU stop-to-resume", "10 ms until the host's vhost ring was enabled",
    ]  # fmt: skip
    assert [s["class"].split()[1] for s in segs[:5]] == [
        "bd-stop", "bd-resume", "bd-ready", "bd-announce", "bd-first_reply",
    ]  # fmt: skip
    plain = page.plain
    assert (
        "segments in the outage sum to 49 ms of 49 ms (difference 0 ms, uncertainty ± 3 ms)"
        in plain
    )
    assert "out of order: ready before resume" in plain and "not seen: announce" in plain
    assert f"ready: {READY_LINE}" in plain


def test_segments_outside_the_outage_are_hatched_and_said_so() -> None:
    case = case_of([LEG1])
    bd = case.measure["legs"][0]["breakdown"]
    bd["segments"][-1]["in_outage"] = False
    page = Page(render_html(synthetic_run([case])))
    last = page.with_class("bd-seg")[-1]
    assert "bd-out" in last["class"].split()
    assert "3.3 ms to the first reply (outside the outage)" in page.plain


def test_the_stream_figures_are_in_the_report() -> None:
    plain = Page(render_html(synthetic_run([case_of([LEG1])]))).plain
    for text in (
        "outage uncertainty (±) 3 ms",
        "reply-gap noise p99 (before migrate) 1 ms",
        "reply-gap noise max (before migrate) 1 ms",
        "largest tester send gap in the outage 1 ms",
        "tester receive drops 0",
        "probes lost in the precopy 0",
        "probes lost outside the switch-over 0",
        "tester receive lag p99 0.5 ms",
        "tester receive lag max 4 ms",
    ):
        assert text in plain, text


@pytest.mark.parametrize("junk", [None, "x", {"segments": [{"ms": "a"}]}, {"segments": None}])
def test_junk_breakdowns_draw_no_bar(junk: Any) -> None:
    case = case_of([LEG1])
    case.measure["legs"][0]["breakdown"] = junk
    case.measure["breakdown"] = junk
    page = Page(render_html(synthetic_run([case])))
    assert page.with_class("bd-bar") == []
    assert "migration 1" not in render_summary(synthetic_run([case]))
